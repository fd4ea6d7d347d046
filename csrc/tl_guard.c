/* Interrupt and fork guards for long kernel calls (see tl_guard.h). */
#if !defined(_WIN32) && !defined(_XOPEN_SOURCE) && !defined(__APPLE__)
#define _XOPEN_SOURCE 700 /* sigaction, SA_ONSTACK, SA_RESTART under -std=c99 */
#endif
#include "tl_guard.h"

#if defined(_WIN32)

/* No POSIX signals or fork: kernels are never stopped, teams never clamped. */
int tl_sigint_guard_begin(void) { return 0; }
int tl_sigint_guard_end(void) { return 0; }
const tl_stop_flag *tl_stop_flag_here(void) { return 0; }
void tl_fork_guard_init(void) {}
int tl_forked_child(void) { return 0; }
int tl_team_size(int n) { return n; }

#else

#include <errno.h>
#include <pthread.h>
#include <string.h>

static tl_stop_flag tl__never = 0;          /* polled by calls of other threads */
static tl_stop_flag tl__stop = 0;           /* raised by the handler */
static volatile sig_atomic_t tl__active = 0;
static pthread_t tl__owner;                 /* the thread that began the active guard */
static struct sigaction tl__prev;           /* the handler the guard replaced */
static volatile sig_atomic_t tl__forked = 0;
static int tl__fork_registered = 0;

/* Runs in whichever thread the kernel delivers SIGINT to. */
static void tl__on_sigint(int sig, siginfo_t *info, void *context) {
    int saved = errno;
    tl__stop = 1;
    if (tl__prev.sa_handler != SIG_DFL && tl__prev.sa_handler != SIG_IGN) {
        if (tl__prev.sa_flags & SA_SIGINFO)
            tl__prev.sa_sigaction(sig, info, context);
        else
            tl__prev.sa_handler(sig);
    }
    errno = saved;
}

int tl_sigint_guard_begin(void) {
    struct sigaction cur, mine;
    if (tl__active) return 0;
    if (sigaction(SIGINT, NULL, &cur) != 0) return 0;
    if (cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN) return 0;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == tl__on_sigint) return 0;
    /* the previous handler is recorded before ours can run */
    tl__prev = cur;
    tl__stop = 0;
    memset(&mine, 0, sizeof mine);
    mine.sa_sigaction = tl__on_sigint;
    mine.sa_mask = cur.sa_mask;
    mine.sa_flags = SA_SIGINFO | (cur.sa_flags & (SA_ONSTACK | SA_RESTART));
    tl__owner = pthread_self();
    tl__active = 1;
    if (sigaction(SIGINT, &mine, NULL) != 0) {
        tl__active = 0;
        return 0;
    }
    return 1;
}

int tl_sigint_guard_end(void) {
    int stopped;
    if (!tl__active) return 0;
    sigaction(SIGINT, &tl__prev, NULL);
    tl__active = 0;
    stopped = tl__stop != 0;
    tl__stop = 0;
    return stopped;
}

const tl_stop_flag *tl_stop_flag_here(void) {
    if (tl__active && pthread_equal(tl__owner, pthread_self())) return &tl__stop;
    return &tl__never;
}

/* In the child (async-signal-safe calls only): the pool of the parent's OpenMP runtime is
 * gone, and a guard active in the parent belongs to a call that does not exist here. */
static void tl__after_fork_child(void) {
    tl__forked = 1;
    if (tl__active) {
        sigaction(SIGINT, &tl__prev, NULL);
        tl__active = 0;
    }
    tl__stop = 0;
}

void tl_fork_guard_init(void) {
    if (tl__fork_registered) return;
    if (pthread_atfork(NULL, NULL, tl__after_fork_child) == 0) tl__fork_registered = 1;
}

int tl_forked_child(void) { return tl__forked != 0; }

int tl_team_size(int n) { return tl__forked ? 1 : n; }

#endif
