// make_init_umount PID PATH: attaches to process PID (which must be waiting in a system call)
// and makes it call umount2(PATH, MNT_DETACH), then lets it go on as it was. Prints the result:
// "umount2: done" or "umount2: <error>". Used to show that a sandbox's own init, which a command
// with CAP_SYS_PTRACE may trace, cannot be made to undo the sandbox's masks (x86_64 only).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    pid_t pid = atoi(argv[1]);
    const char* path = argv[2];
    int status;
    // Only ever a sandbox's init: run anywhere else by mistake, this must not touch the host's.
    char comm_path[64], comm[32] = "";
    snprintf(comm_path, sizeof comm_path, "/proc/%d/comm", (int)pid);
    FILE* f = fopen(comm_path, "r");
    if (!f || !fgets(comm, sizeof comm, f) || strcmp(comm, "hutch-init\n") != 0) {
        printf("refused: process %d is not a sandbox's init\n", (int)pid);
        return 1;
    }
    fclose(f);
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0 || ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0 ||
        waitpid(pid, &status, __WALL) < 0) {
        printf("attach: %s\n", strerror(errno));
        return 1;
    }
    struct user_regs_struct saved, regs;
    ptrace(PTRACE_GETREGS, pid, 0, &saved);
    long code = ptrace(PTRACE_PEEKTEXT, pid, saved.rip - 2, 0);
    if ((code & 0xffff) != 0x050f) {  // the `syscall` instruction it waits in
        ptrace(PTRACE_DETACH, pid, 0, 0);
        printf("attach: not waiting in a system call\n");
        return 1;
    }
    unsigned long at = (saved.rsp - 4096) & ~15UL;  // below its stack, out of the red zone
    size_t n = strlen(path) + 1;
    for (size_t i = 0; i < n; i += sizeof(long)) {
        long word = 0;
        memcpy(&word, path + i, n - i < sizeof(long) ? n - i : sizeof(long));
        ptrace(PTRACE_POKEDATA, pid, at + i, word);
    }
    regs = saved;
    regs.rip = saved.rip - 2;
    regs.orig_rax = -1;  // no restart of the interrupted call over ours
    regs.rax = SYS_umount2;
    regs.rdi = at;
    regs.rsi = MNT_DETACH;
    ptrace(PTRACE_SETREGS, pid, 0, &regs);
    ptrace(PTRACE_SINGLESTEP, pid, 0, 0);
    waitpid(pid, &status, __WALL);
    ptrace(PTRACE_GETREGS, pid, 0, &regs);
    long ret = (long)regs.rax;
    ptrace(PTRACE_SETREGS, pid, 0, &saved);
    ptrace(PTRACE_DETACH, pid, 0, 0);
    printf("umount2: %s\n", ret == 0 ? "done" : strerror((int)-ret));
    return 0;
}
