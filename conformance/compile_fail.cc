// Compiled by compile_fail_test.sh, once per case (-DCASE=n): each case but
// the control must fail to compile with the static_assert's message, and
// name the type at fault (mp/codec.h: "Types that never travel").
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mp/connection.h"
#include "mp/context.h"
#include "mp/pool.h"
#include "mp/queue.h"

void work(int) {}
struct NotEncodable {
  int* p;
  std::string s;
};
void take(NotEncodable) {}

struct WithPointer {  // trivially copyable: memcpy'd before, pointer and all
  int id;
  int* data;
};
struct WithView {
  int id;
  std::string_view name;
};
struct InnerSpan {
  int n;
  std::span<const int> items;
};
struct OuterOfSpan {
  double weight;
  InnerSpan inner;
};
struct Job {
  int id;
  const char* label;
};
struct PlainJob {  // the control: plain fields travel
  int id;
  char label[16];
  double cost;
};
void take_job(Job) {}
int job_id(Job j) { return j.id; }
Job make_job(int id) { return Job{id, nullptr}; }

int main() {
  auto ctx = mp::get_context("spawn");
  int captured = 1;
  (void)captured;
#if CASE == 0  // control: a captureless lambda and encodable arguments compile
  mp::Process p = ctx.Process([](int x) { (void)x; }, 42);
  mp::Process q = ctx.Process(work, 1);
  mp::Queue<std::vector<PlainJob>> jobs;
  (void)mp::encode(std::string_view("a view encodes"));
  (void)mp::decode<std::string_view>(std::string_view("\0\0\0\0\0\0\0\0", 8));
#elif CASE == 1   // a lambda with captures
  mp::Process p = ctx.Process([captured](int x) { (void)(x + captured); }, 42);
#elif CASE == 2   // a std::function (state the child cannot rebuild)
  std::function<void(int)> f = work;
  mp::Process p = ctx.Process(f, 42);
#elif CASE == 3   // an argument the codec cannot encode
  mp::Process p = ctx.Process(take, NotEncodable{});
#elif CASE == 4   // a memcpy'd struct with a raw pointer field
  (void)mp::encode(WithPointer{});
#elif CASE == 5   // a memcpy'd struct with a string_view field
  mp::Queue<WithView> q;
#elif CASE == 6   // a span two structs deep
  (void)mp::encode(OuterOfSpan{});
#elif CASE == 7   // a top-level view cannot travel through a Queue
  mp::Queue<std::string_view> q;
#elif CASE == 8   // a vector of a bad struct names the struct
  mp::Queue<std::vector<Job>> q;
#elif CASE == 9   // Connection: the same check, the same words
  auto [a, b] = mp::Pipe();
  a.send(Job{});
#elif CASE == 10  // Pool: a task's argument
  mp::Pool pool(1);
  (void)pool.apply(take_job, Job{});
#elif CASE == 11  // Pool: map items
  mp::Pool pool(1);
  (void)pool.map(job_id, std::vector<Job>{});
#elif CASE == 12  // Pool: a task's result
  mp::Pool pool(1);
  (void)pool.apply(make_job, 1);
#elif CASE == 13  // Process: a travelling argument
  mp::Process p = ctx.Process(take_job, Job{});
#elif CASE == 14  // Connection: a view nested in a container
  auto [a, b] = mp::Pipe();
  (void)b.recv<std::vector<std::string_view>>();
#endif
}
