// Conformance: mp/os.h.
// CPython docs: os.fork(), os.getpid(), os.getppid(), os.process_cpu_count(),
// multiprocessing.Process.exitcode (exit code n -> n, signal N -> -N).
#include "mp/os.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "conformance/test_util.h"

namespace {

int wait_for(pid_t pid) {
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

TEST(Fork, ReturnsZeroInChildAndChildPidInParent) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = mp::fork();
  if (pid == 0) {
    pid_t me = mp::getpid();
    pid_t parent = mp::getppid();
    (void)!write(fds[1], &me, sizeof me);
    (void)!write(fds[1], &parent, sizeof parent);
    _exit(0);
  }
  ASSERT_GT(pid, 0);
  pid_t child_self = 0, child_parent = 0;
  ASSERT_EQ(read(fds[0], &child_self, sizeof child_self), (ssize_t)sizeof child_self);
  ASSERT_EQ(read(fds[0], &child_parent, sizeof child_parent), (ssize_t)sizeof child_parent);
  EXPECT_EQ(child_self, pid);
  EXPECT_EQ(child_parent, mp::getpid());
  wait_for(pid);
  close(fds[0]);
  close(fds[1]);
}

TEST(Fork, GetpidMatchesTheOs) {
  EXPECT_EQ(mp::getpid(), ::getpid());
  EXPECT_EQ(mp::getppid(), ::getppid());
}

TEST(CpuCount, HonoursTheAffinityMask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_EQ(mp::cpu_count(), CPU_COUNT(&set));

  // Restrict a child to one CPU: its cpu_count() must say 1.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = mp::fork();
  if (pid == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) {
        CPU_SET(c, &one);
        break;
      }
    }
    sched_setaffinity(0, sizeof one, &one);
    int n = mp::cpu_count();
    (void)!write(fds[1], &n, sizeof n);
    _exit(0);
  }
  int n = 0;
  ASSERT_EQ(read(fds[0], &n, sizeof n), (ssize_t)sizeof n);
  EXPECT_EQ(n, 1);
  wait_for(pid);
  close(fds[0]);
  close(fds[1]);
}

TEST(WaitStatus, ExitCodeNGivesN) {
  for (int code : {0, 1, 7, 255}) {
    pid_t pid = mp::fork();
    if (pid == 0) _exit(code);
    EXPECT_EQ(mp::exitcode_from_wait_status(wait_for(pid)), code);
  }
}

TEST(WaitStatus, DeathBySignalNGivesMinusN) {
  pid_t pid = mp::fork();
  if (pid == 0) {
    for (;;) pause();
  }
  kill(pid, SIGKILL);
  EXPECT_EQ(mp::exitcode_from_wait_status(wait_for(pid)), -SIGKILL);
}

TEST(Exit, CodeIsTakenModulo256) {
  pid_t pid = mp::fork();
  if (pid == 0) mp::exit(256 + 3);
  EXPECT_EQ(mp::exitcode_from_wait_status(wait_for(pid)), 3);
}

// Text buffered in stdio before a fork appears exactly once.
TEST(Stdio, OutputBufferedBeforeForkAppearsOnce) {
  char path[] = "/tmp/mp_stdio_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  pid_t writer = ::fork();  // a process whose stdout is the file
  if (writer == 0) {
    dup2(fd, STDOUT_FILENO);
    setvbuf(stdout, nullptr, _IOFBF, 4096);  // fully buffered, as for a file
    std::printf("before fork\n");            // sits in the buffer
    pid_t pid = mp::fork();
    if (pid == 0) {
      std::printf("child\n");
      mp::exit(0);
    }
    waitpid(pid, nullptr, 0);
    std::printf("parent\n");
    std::fflush(stdout);
    _exit(0);
  }
  wait_for(writer);
  std::string text;
  char buf[256];
  ssize_t n;
  lseek(fd, 0, SEEK_SET);
  while ((n = read(fd, buf, sizeof buf)) > 0) text.append(buf, n);
  close(fd);
  unlink(path);
  EXPECT_EQ(text, "before fork\nchild\nparent\n");
}

}  // namespace
