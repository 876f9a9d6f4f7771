// Compiled by compile_fail_test.sh, once per case (-DCASE=n): each case but
// the control must fail to compile with the static_assert's message.
#include <string>

#include "mp/context.h"

void work(int) {}
struct NotEncodable {
  int* p;
  std::string s;
};
void take(NotEncodable) {}

int main() {
  auto ctx = mp::get_context("spawn");
  int captured = 1;
  (void)captured;
#if CASE == 0  // control: a captureless lambda and encodable arguments compile
  mp::Process p = ctx.Process([](int x) { (void)x; }, 42);
  mp::Process q = ctx.Process(work, 1);
#elif CASE == 1  // a lambda with captures
  mp::Process p = ctx.Process([captured](int x) { (void)(x + captured); }, 42);
#elif CASE == 2  // a std::function (state the child cannot rebuild)
  std::function<void(int)> f = work;
  mp::Process p = ctx.Process(f, 42);
#elif CASE == 3  // an argument the codec cannot encode
  mp::Process p = ctx.Process(take, NotEncodable{});
#endif
}
