"""mp_deps(): every repository mp needs, declared offline.

A workspace that uses mp writes, in its WORKSPACE:

    local_repository(name = "mp", path = "/path/to/mp")
    load("@mp//:repositories.bzl", "mp_deps")
    mp_deps()

mp's own WORKSPACE calls the same macro, so the two cannot drift. Each
repository is declared only if the workspace has not declared it already, so
a workspace that brings its own rules_cc (or its own @system) keeps it.

  @system                 Debian's fmt, GoogleTest, Google Benchmark and Open MPI
                          under /usr (tools/setup.sh installs them), mapped by
                          third_party/system.BUILD. The library directory is
                          found on the host (gcc -print-multiarch: x86_64,
                          aarch64, ...), not hard-coded.
  @rules_cc, @rules_java, @remote_coverage_tools
                          tiny local stand-ins for what Bazel 4 would download
                          (third_party/); with them no build step reaches the
                          network.
"""

def _local_copy_impl(rctx):
    # A repository whose entries are symlinks to those of a directory of mp:
    # local_repository() would need that directory's path, which a consumer's
    # WORKSPACE should not have to spell out twice.
    mp_root = rctx.path(rctx.attr.mp_root_file).dirname
    for entry in rctx.path("%s/%s" % (mp_root, rctx.attr.dir)).readdir():
        rctx.symlink(entry, entry.basename)

_local_copy = repository_rule(
    implementation = _local_copy_impl,
    attrs = {
        "mp_root_file": attr.label(allow_single_file = True),  # a file at mp's root
        "dir": attr.string(),  # the directory, relative to mp's root
    },
    local = True,
)

def _libdir(rctx, usr):
    # The directory under /usr that holds the -dev packages' libraries: the
    # compiler's multiarch directory (Debian, Ubuntu), else lib64 or lib.
    candidates = []
    cc = rctx.os.environ.get("CC", "gcc")
    res = rctx.execute([cc, "-print-multiarch"])
    if res.return_code == 0 and res.stdout.strip():
        candidates.append("lib/" + res.stdout.strip())
    candidates += ["lib64", "lib"]
    for d in candidates:
        if rctx.path(usr + "/" + d + "/libfmt.so").exists:
            return d
    fail("mp_deps: libfmt.so not found under %s/{%s}; install Debian's libfmt-dev (tools/setup.sh)" %
         (usr, ",".join(candidates)))

def _mpi_include(rctx, usr, libdir):
    # Open MPI's headers (libopenmpi-dev): Debian links the default MPI's
    # include directory at /usr/include/<multiarch>/mpi; else Open MPI's own.
    # None when MPI is not installed (only //lib/mp:mpi needs it).
    arch = libdir[len("lib/"):] if libdir.startswith("lib/") else ""
    candidates = []
    if arch:
        candidates += ["include/%s/mpi" % arch, "lib/%s/openmpi/include" % arch]
    candidates += ["include/mpi", "lib/openmpi/include", "lib64/openmpi/include"]
    for d in candidates:
        if rctx.path(usr + "/" + d + "/mpi.h").exists:
            return usr + "/" + d
    return None

def _system_impl(rctx):
    usr = rctx.attr.path
    libdir = _libdir(rctx, usr)
    rctx.symlink(usr + "/include", "include")
    rctx.symlink(usr + "/" + libdir, "lib")
    mpi = _mpi_include(rctx, usr, libdir)
    if mpi:
        rctx.symlink(mpi, "mpi_include")
    rctx.symlink(rctx.attr.build_file, "BUILD.bazel")
    rctx.file("WORKSPACE", 'workspace(name = "%s")\n' % rctx.name)

_system_libraries = repository_rule(
    implementation = _system_impl,
    attrs = {
        "path": attr.string(default = "/usr"),
        "build_file": attr.label(allow_single_file = True),
    },
    environ = ["CC"],
    local = True,
)

def mp_deps():
    """Declares @system, @rules_cc, @rules_java and @remote_coverage_tools."""
    if not native.existing_rule("system"):
        _system_libraries(
            name = "system",
            build_file = Label("//third_party:system.BUILD"),
        )
    for name in ["rules_cc", "rules_java", "remote_coverage_tools"]:
        if not native.existing_rule(name):
            _local_copy(
                name = name,
                mp_root_file = Label("//:repositories.bzl"),
                dir = "third_party/" + name,
            )
