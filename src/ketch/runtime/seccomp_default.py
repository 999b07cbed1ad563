"""ketch's default seccomp profile: what a container may ask of the kernel.

The intent is Docker's: everything an ordinary program needs is allowed; what
would reach outside the container (kernel modules, the clock, mounts and new
namespaces, keyrings, raw I/O ports, kexec, ...) fails with EPERM, unless the
container was given the capability that makes it legitimate, in which case the
matching group opens up. The kernel still checks that capability itself; the
filter only shrinks what is reachable without it.

    profile = default_profile({"CAP_CHOWN", "CAP_NET_RAW", ...}, arch="x86_64")
    spec.linux.seccomp = profile

The profile is data (``Seccomp``), built from the groups below; names unknown
to the host's libseccomp are skipped when the filter is compiled, so a group
may list syscalls newer than the host. clone3 answers ENOSYS (not EPERM)
without CAP_SYS_ADMIN, because its flags live in memory a filter cannot read:
glibc then falls back to clone, whose flags the filter can check.
"""

from __future__ import annotations

import platform

from ketch.linux.seccomp import ArgCmp, Seccomp, SyscallRule

EPERM = 1
ENOSYS = 38

# Every namespace flag clone(2) accepts: without CAP_SYS_ADMIN, clone may not
# use any of them (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET).
CLONE_NAMESPACE_FLAGS = 0x7E020000

# personality(2) values allowed to everyone: PER_LINUX, UNAME26, PER_LINUX32,
# PER_LINUX32|UNAME26, and 0xffffffff (query the current persona).
SAFE_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# ---------------------------------------------------------------------------
# Allowed to every container, grouped by purpose.

_FILES = [
    # descriptors and plain I/O
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range",
    "lseek", "_llseek", "dup", "dup2", "dup3", "fcntl", "fcntl64", "ioctl", "flock",
    "pipe", "pipe2", "memfd_create", "sendfile", "sendfile64", "splice", "tee",
    "vmsplice", "copy_file_range", "readahead", "fadvise64", "fadvise64_64",
    "fallocate", "truncate", "truncate64", "ftruncate", "ftruncate64",
    "fsync", "fdatasync", "sync", "syncfs", "sync_file_range",
    # names, metadata and directories
    "stat", "lstat", "fstat", "stat64", "lstat64", "fstat64", "newfstatat", "fstatat64",
    "statx", "statfs", "statfs64", "fstatfs", "fstatfs64", "access", "faccessat",
    "faccessat2", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
    "fchownat", "chown32", "fchown32", "lchown32", "umask", "link", "linkat", "symlink",
    "symlinkat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir",
    "mkdirat", "rmdir", "mknod", "mknodat", "readlink", "readlinkat", "getcwd", "chdir",
    "fchdir", "getdents", "getdents64", "utime", "utimes", "futimesat", "utimensat",
    "utimensat_time64",
    # extended attributes
    "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr",
    "fsetxattr", "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat",
    "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
    # watching files
    "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    "fanotify_mark",
]

_MEMORY = [
    "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
    "mlock", "mlock2", "munlock", "mlockall", "munlockall", "remap_file_pages",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "membarrier", "get_mempolicy",
    "map_shadow_stack", "mseal", "cachestat",
]

_PROCESSES = [
    # life and death
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
    "waitpid", "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "pidfd_open", "pidfd_send_signal", "restart_syscall",
    # identity of the process and its session
    "getpid", "getppid", "gettid", "set_tid_address", "getpgid", "setpgid", "getpgrp",
    "getsid", "setsid", "prctl", "arch_prctl", "capget", "capset", "seccomp",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    # threads and their synchronisation
    "futex", "futex_time64", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
    "set_robust_list", "get_robust_list", "rseq", "get_thread_area", "set_thread_area",
    # scheduling and accounting (the kernel checks raising priorities itself)
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam",
    "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_getattr",
    "sched_setattr", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "getpriority", "setpriority",
    "ioprio_get", "ioprio_set", "getcpu", "getrusage", "times", "getrlimit", "setrlimit",
    "ugetrlimit", "prlimit64",
]

_CREDENTIALS = [
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups",
    # 32-bit ABIs' 32-bit-id variants
    "getuid32", "geteuid32", "getgid32", "getegid32", "getresuid32", "getresgid32",
    "getgroups32", "setuid32", "setgid32", "setreuid32", "setregid32", "setresuid32",
    "setresgid32", "setfsuid32", "setfsgid32", "setgroups32",
]

_SIGNALS = [
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "sigaction", "sigprocmask", "sigreturn",
    "sigpending", "sigsuspend", "signal", "sigaltstack", "signalfd", "signalfd4", "pause",
]

_TIME = [
    "clock_gettime", "clock_gettime64", "clock_getres", "clock_getres_time64",
    "clock_nanosleep", "clock_nanosleep_time64", "nanosleep", "gettimeofday", "time",
    "alarm", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64",
    # read the clock's discipline; changing it needs CAP_SYS_TIME, checked by the kernel
    "adjtimex", "clock_adjtime", "clock_adjtime64",
]

_WAITING = [
    "select", "_newselect", "pselect6", "pselect6_time64", "poll", "ppoll",
    "ppoll_time64", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
    "epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    # POSIX AIO (io_uring stays out, as in Docker since 2023: a large attack surface)
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    "io_pgetevents_time64",
]

_NETWORK = [
    "socket", "socketpair", "bind", "connect", "listen", "accept", "accept4", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "send", "sendto", "sendmsg", "sendmmsg",
    "recv", "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time64", "shutdown",
    "socketcall",
]

_IPC = [
    "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop",
    "semtimedop_time64", "semctl", "shmget", "shmat", "shmdt", "shmctl", "ipc",
    "mq_open", "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
]

_SYSTEM_INFO = ["uname", "sysinfo", "getrandom"]

# Only on some architectures; added for those (unknown names would be skipped
# anyway, but the profile reads better without them).
_ARCH_EXTRAS: dict[str, list[str]] = {
    "arm": ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
            "cacheflush", "set_tls"],
    "aarch64": ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
                "breakpoint", "cacheflush", "set_tls"],
    "ppc64le": ["sync_file_range2", "swapcontext"],
    "s390x": ["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"],
    "x86_64": ["uretprobe"],
}

# ---------------------------------------------------------------------------
# Opened by a capability. The kernel requires the same capability for them.

_BY_CAPABILITY: dict[str, list[str]] = {
    "CAP_SYS_ADMIN": [
        "mount", "umount", "umount2", "mount_setattr", "move_mount", "open_tree",
        "fsopen", "fsconfig", "fsmount", "fspick", "pivot_root", "unshare", "setns",
        "sethostname", "setdomainname", "quotactl", "quotactl_fd", "fanotify_init",
        "lookup_dcookie", "bpf", "perf_event_open", "syslog",
    ],
    "CAP_SYS_PTRACE": [
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        "process_madvise", "userfaultfd",
    ],
    "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_NICE": ["mbind", "set_mempolicy", "set_mempolicy_home_node", "migrate_pages",
                     "move_pages"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at", "name_to_handle_at"],
    # CAP_SYS_RESOURCE opens nothing: setrlimit/prlimit64 are always allowed and
    # the kernel itself refuses raising a hard limit without the capability.
}

# Always refused, whatever the capabilities (not in any list above): keyctl,
# add_key, request_key (keyrings are not namespaced), kexec_load,
# kexec_file_load, swapon, swapoff, modify_ldt, uselib, ustat, sysfs, _sysctl,
# nfsservctl, vm86, vm86old, io_uring_*, create_module, get_kernel_syms,
# query_module. Argument tests use full 64-bit values (personality, clone), so
# setting a register's upper half cannot slip past them.

# Host architecture (uname or Go spelling) -> the ABIs a container may use.
_ARCHES: dict[str, list[str]] = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "x86": ["SCMP_ARCH_X86"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "arm": ["SCMP_ARCH_ARM"],
    "mips64": ["SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPS"],
    "mipsel64": ["SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_MIPSEL"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
    "loongarch64": ["SCMP_ARCH_LOONGARCH64"],
}
_ARCH_ALIASES = {"amd64": "x86_64", "386": "x86", "i386": "x86", "i686": "x86",
                 "arm64": "aarch64", "armv7l": "arm", "armv6l": "arm", "armhf": "arm",
                 "mips64le": "mipsel64", "loong64": "loongarch64"}


def _normal_arch(arch: str | None) -> str:
    a = (arch or platform.machine()).lower()
    return _ARCH_ALIASES.get(a, a)


def default_profile(capabilities: set[str] | None = None, arch: str | None = None) -> Seccomp:
    """The profile for a container with ``capabilities`` (its bounding set), on ``arch``.

    ``arch`` is the host's (``platform.machine()`` by default; Go's names work
    too). An architecture without a table gets an empty ``architectures``
    list: the filter then covers the native ABI only.
    """
    caps = set(capabilities or ())
    a = _normal_arch(arch)
    admin = "CAP_SYS_ADMIN" in caps

    allowed = (_FILES + _MEMORY + _PROCESSES + _CREDENTIALS + _SIGNALS + _TIME + _WAITING
               + _NETWORK + _IPC + _SYSTEM_INFO + _ARCH_EXTRAS.get(a, []))
    for cap, names in _BY_CAPABILITY.items():
        if cap in caps:
            allowed += names
    if admin:
        allowed += ["clone", "clone3"]
    allowed = list(dict.fromkeys(allowed))   # each name once, order kept

    allow = "SCMP_ACT_ALLOW"
    rules = [SyscallRule(names=allowed, action=allow)]
    # personality: only the personas that change nothing dangerous.
    rules += [SyscallRule(names=["personality"], action=allow,
                          args=[ArgCmp(index=0, value=p, op="SCMP_CMP_EQ")])
              for p in SAFE_PERSONAS]
    if not admin:
        # clone: no namespace flags. s390 passes the flags second (stack first).
        flags_arg = 1 if a == "s390x" else 0
        rules.append(SyscallRule(names=["clone"], action=allow, args=[
            ArgCmp(index=flags_arg, value=CLONE_NAMESPACE_FLAGS, value_two=0,
                   op="SCMP_CMP_MASKED_EQ")]))
        rules.append(SyscallRule(names=["clone3"], action="SCMP_ACT_ERRNO", errno_ret=ENOSYS))
    return Seccomp(default_action="SCMP_ACT_ERRNO", default_errno_ret=EPERM,
                   architectures=list(_ARCHES.get(a, [])), syscalls=rules)
