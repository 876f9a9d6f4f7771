// Tutorial: a process is killed while it holds a lock. With CPython's
// multiprocessing.Lock everyone else would wait forever; mp hands the lock to
// the next acquirer together with mp::OwnerDeadError, so it can repair the
// state the lock protects.
//   bazel run //examples:sync_lock_recovery
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include "mp/process.h"
#include "mp/shared.h"
#include "mp/synchronize.h"

struct Account {
  long balance;
  long pending;  // non-zero while a transfer is half done
};

int main() {
  mp::Lock lock;
  mp::RawValue<Account> account(Account{100, 0});
  mp::Event half_done;

  mp::Process careless([&] {
    lock.acquire();
    account.get_obj().pending = 40;  // start a transfer ...
    half_done.set();
    for (;;) pause();  // ... and never finish it
  });
  careless.start();
  half_done.wait();
  careless.kill();  // SIGKILL while holding the lock
  careless.join();
  fmt::print("worker died by signal {}\n", -careless.exitcode().value());

  try {
    lock.acquire();
    fmt::print("lock acquired normally\n");
  } catch (const mp::OwnerDeadError& e) {
    // We hold the lock now. Roll back the half-done transfer.
    fmt::print("recovered: {}\n", e.what());
    account.get_obj().pending = 0;
  }
  fmt::print("balance = {}, pending = {}\n", account.get_obj().balance, account.get_obj().pending);
  lock.release();
}
