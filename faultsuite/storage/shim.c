/*
 * accessd storage fault shim: an LD_PRELOAD library that records, in order, everything a
 * process does to the files of one directory (writes with their offsets, truncations, fsync and
 * fdatasync, creations, renames, unlinks) into a binary log, so that the state of that
 * directory after a power loss at any instant can be rebuilt later (faultsuite/storage/crash.py);
 * and that can delay every fsync/fdatasync of those files, as an SD card stalls.
 *
 * Environment (faultsuite/storage/__init__.py builds it; docs/reliability.md documents it):
 *   ACCESSD_SHIM_DIR        the directory whose files are tracked (nothing is tracked without it)
 *   ACCESSD_SHIM_LOG        append the binary log here (optional)
 *   ACCESSD_SHIM_MARKER     a file outside the directory; what is written to it is logged as a
 *                           marker record ("commit 17 returned") in the same order as the I/O
 *   ACCESSD_FSYNC_DELAY_MS  "50" or "50-200": sleep that long (uniformly drawn) in every
 *                           fsync/fdatasync of a tracked file, before syncing it
 *   ACCESSD_SHIM_SYNC       real (default) | skip (log the sync, do not ask the kernel) |
 *                           drop (neither log nor sync: a disk that ignores flushes)
 *   ACCESSD_SHIM_STATS      append one line of counters per process at exit
 *
 * Not intercepted (documented limits): stdio streams (fopen/fwrite use glibc's internal calls),
 * io_uring and AIO, writes through shared writable mappings (logged as "unsupported" unless the
 * file is a SQLite -shm), hard links, and directories other than the tracked one's tree.
 * Anything the log cannot represent is logged as an "unsupported" record, which the
 * reconstruction refuses, so a gap in the log fails loudly instead of flattering the result.
 */
#undef _FORTIFY_SOURCE
#undef _FILE_OFFSET_BITS
#undef _TIME_BITS
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x314c5341u /* "ASL1", little-endian */

enum {
    OP_OPEN = 1, OP_WRITE = 2, OP_TRUNCATE = 3, OP_SYNC = 4, OP_RENAME = 5, OP_UNLINK = 6,
    OP_CLOSE = 7, OP_MARK = 8, OP_EXTEND = 9, OP_UNSUPPORTED = 10, OP_SYNC_ALL = 11,
    OP_DUP = 12, OP_FORK = 13
};
enum { F_CREATED = 1, F_ISDIR = 2, F_DATASYNC = 4, F_SYNCWRITES = 8, F_TRUNC = 16 };
enum { K_NONE = 0, K_FILE = 1, K_DIR = 2, K_MARKER = 3 };
enum { SYNC_REAL = 0, SYNC_SKIP = 1, SYNC_DROP = 2 };

struct rec {             /* 56 bytes, no padding on LP64 and ILP32 (EABI) alike */
    uint32_t magic;
    uint16_t op;
    uint16_t flags;
    uint32_t pid;
    int32_t fd;
    int64_t offset;      /* write offset, new size, sync: log position the sync covers, ... */
    uint64_t length;     /* bytes of data after the paths */
    uint32_t path_len;
    uint32_t path2_len;
    uint64_t ino;
    uint64_t t_ns;       /* CLOCK_MONOTONIC */
};
_Static_assert(sizeof(struct rec) == 56, "log record header must be 56 bytes");

struct ent {
    char *path;
    uint64_t ino;
    uint8_t kind;
    uint8_t append;      /* O_APPEND: a pwrite appends */
    uint8_t syncw;       /* O_SYNC / O_DSYNC: every write is durable at once */
    uint8_t shm;         /* a SQLite -shm file (mapped, never durable) */
};

/* the real functions */
static int (*r_open)(const char *, int, ...);
static int (*r_openat)(int, const char *, int, ...);
static ssize_t (*r_write)(int, const void *, size_t);
static ssize_t (*r_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*r_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*r_writev)(int, const struct iovec *, int);
static ssize_t (*r_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*r_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*r_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*r_pwritev64v2)(int, const struct iovec *, int, off64_t, int);
static int (*r_ftruncate)(int, off_t);
static int (*r_ftruncate64)(int, off64_t);
static int (*r_truncate)(const char *, off_t);
static int (*r_truncate64)(const char *, off64_t);
static int (*r_fallocate)(int, int, off_t, off_t);
static int (*r_fallocate64)(int, int, off64_t, off64_t);
static int (*r_posix_fallocate)(int, off_t, off_t);
static int (*r_posix_fallocate64)(int, off64_t, off64_t);
static int (*r_fsync)(int);
static int (*r_fdatasync)(int);
static void (*r_sync)(void);
static int (*r_syncfs)(int);
static int (*r_close)(int);
static int (*r_close_range)(unsigned int, unsigned int, int);
static int (*r_dup)(int);
static int (*r_dup2)(int, int);
static int (*r_dup3)(int, int, int);
static int (*r_fcntl)(int, int, ...);
static int (*r_fcntl64)(int, int, ...);
static void *(*r_mmap)(void *, size_t, int, int, int, off_t);
static void *(*r_mmap64)(void *, size_t, int, int, int, off64_t);
static ssize_t (*r_copy_file_range)(int, off64_t *, int, off64_t *, size_t, unsigned int);
static ssize_t (*r_sendfile)(int, int, off_t *, size_t);
static ssize_t (*r_sendfile64)(int, int, off64_t *, size_t);
static int (*r_rename)(const char *, const char *);
static int (*r_renameat)(int, const char *, int, const char *);
static int (*r_renameat2)(int, const char *, int, const char *, unsigned int);
static int (*r_unlink)(const char *);
static int (*r_unlinkat)(int, const char *, int);
static int (*r___open_2)(const char *, int);
static int (*r___open64_2)(const char *, int);
static int (*r___openat_2)(int, const char *, int);
static int (*r___openat64_2)(int, const char *, int);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char dir[PATH_MAX];
static size_t dir_len;
static char marker[PATH_MAX];
static int log_fd = -1;
static int sync_mode = SYNC_REAL;
static double delay_lo_ms, delay_hi_ms;
static char stats_path[PATH_MAX];
static struct ent *tab;
static size_t tab_n;
static uint64_t rng_state;
static pid_t owner; /* the process whose state this is; a vfork child shares it, and must not touch it */
static unsigned long n_syncs, n_delayed, n_records;
static unsigned long long delayed_ns;

#define REAL(name) r_##name = dlsym(RTLD_NEXT, #name)

static void die(const char *what) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "accessd storage shim: %s: %s\n", what, strerror(errno));
    if (r_write != NULL && n > 0)
        r_write(2, msg, (size_t)n);
    abort();
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Normalise `path` (relative to `dirfd`) into `out`: the real path of its parent directory plus
 * its last component (symbolic links of the parent resolved, not of the file). 0 on failure. */
static int normalize(int dirfd, const char *path, char *out) {
    char abs[PATH_MAX * 2], parent[PATH_MAX * 2], base[PATH_MAX];
    if (path == NULL || path[0] == '\0')
        return 0;
    if (path[0] == '/') {
        snprintf(abs, sizeof abs, "%s", path);
    } else {
        char here[PATH_MAX];
        if (dirfd == AT_FDCWD) {
            if (getcwd(here, sizeof here) == NULL)
                return 0;
        } else {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, here, sizeof here - 1);
            if (n < 0)
                return 0;
            here[n] = '\0';
        }
        snprintf(abs, sizeof abs, "%s/%s", here, path);
    }
    size_t len = strlen(abs);
    while (len > 1 && abs[len - 1] == '/')
        abs[--len] = '\0';
    char *slash = strrchr(abs, '/');
    snprintf(base, sizeof base, "%s", slash + 1);
    if (slash == abs)
        snprintf(parent, sizeof parent, "/");
    else
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - abs), abs);
    char real_parent[PATH_MAX];
    if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        if (realpath(abs, real_parent) == NULL)
            return 0;
        snprintf(out, PATH_MAX, "%s", real_parent);
    } else {
        if (realpath(parent, real_parent) == NULL)
            return 0;
        if (strcmp(real_parent, "/") == 0) {
            if (snprintf(out, PATH_MAX, "/%s", base) >= PATH_MAX)
                return 0;
        } else if (snprintf(out, PATH_MAX, "%s/%s", real_parent, base) >= PATH_MAX)
            return 0;
    }
    return 1;
}

/* 1 for a path inside the tracked directory, 2 for the marker file, else 0. */
static int classify(int dirfd, const char *path, char *out) {
    if ((dir_len == 0 && marker[0] == '\0') || !normalize(dirfd, path, out))
        return 0;
    if (dir_len && strncmp(out, dir, dir_len) == 0 && (out[dir_len] == '\0' || out[dir_len] == '/'))
        return 1;
    if (marker[0] && strcmp(out, marker) == 0)
        return 2;
    return 0;
}

static void after_fork_child(void);
static void before_fork(void) { pthread_mutex_lock(&mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&mu); }

static void init(void) {
    REAL(open); REAL(openat); REAL(write); REAL(pwrite); REAL(pwrite64); REAL(writev);
    REAL(pwritev); REAL(pwritev64); REAL(pwritev2); REAL(pwritev64v2); REAL(ftruncate);
    REAL(ftruncate64); REAL(truncate); REAL(truncate64); REAL(fallocate); REAL(fallocate64);
    REAL(posix_fallocate); REAL(posix_fallocate64); REAL(fsync); REAL(fdatasync); REAL(sync);
    REAL(syncfs); REAL(close); REAL(close_range); REAL(dup); REAL(dup2); REAL(dup3); REAL(fcntl);
    REAL(fcntl64); REAL(mmap); REAL(mmap64); REAL(copy_file_range); REAL(sendfile);
    REAL(sendfile64); REAL(rename); REAL(renameat); REAL(renameat2); REAL(unlink);
    REAL(unlinkat); REAL(__open_2); REAL(__open64_2); REAL(__openat_2); REAL(__openat64_2);
    if (r_fcntl64 == NULL)
        r_fcntl64 = r_fcntl;

    const char *d = getenv("ACCESSD_SHIM_DIR");
    if (d != NULL && d[0] != '\0') {
        if (realpath(d, dir) == NULL)
            die("ACCESSD_SHIM_DIR does not exist");
        dir_len = strlen(dir);
    }
    const char *m = getenv("ACCESSD_SHIM_MARKER");
    if (m != NULL && m[0] != '\0') {
        if (!normalize(AT_FDCWD, m, marker))
            die("ACCESSD_SHIM_MARKER: its folder does not exist");
        if (dir_len && strncmp(marker, dir, dir_len) == 0 && marker[dir_len] == '/') {
            errno = EINVAL;
            die("ACCESSD_SHIM_MARKER must be outside ACCESSD_SHIM_DIR");
        }
    }
    const char *s = getenv("ACCESSD_SHIM_SYNC");
    if (s != NULL && strcmp(s, "skip") == 0)
        sync_mode = SYNC_SKIP;
    else if (s != NULL && strcmp(s, "drop") == 0)
        sync_mode = SYNC_DROP;
    else if (s != NULL && s[0] != '\0' && strcmp(s, "real") != 0) {
        errno = EINVAL;
        die("ACCESSD_SHIM_SYNC must be real, skip or drop");
    }
    const char *dl = getenv("ACCESSD_FSYNC_DELAY_MS");
    if (dl != NULL && dl[0] != '\0') {
        char *end;
        delay_lo_ms = strtod(dl, &end);
        delay_hi_ms = delay_lo_ms;
        if (*end == '-')
            delay_hi_ms = strtod(end + 1, &end);
        if (*end != '\0' || delay_lo_ms < 0 || delay_hi_ms < delay_lo_ms) {
            errno = EINVAL;
            die("ACCESSD_FSYNC_DELAY_MS must be N or LO-HI milliseconds");
        }
    }
    const char *st = getenv("ACCESSD_SHIM_STATS");
    if (st != NULL)
        snprintf(stats_path, sizeof stats_path, "%s", st);
    const char *l = getenv("ACCESSD_SHIM_LOG");
    if (l != NULL && l[0] != '\0') {
        int fd = r_open(l, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            die("cannot open ACCESSD_SHIM_LOG");
        log_fd = r_fcntl(fd, F_DUPFD_CLOEXEC, 900); /* out of the way of the application's fds */
        if (log_fd < 0)
            log_fd = fd;
        else
            r_close(fd);
    }
    owner = getpid();
    rng_state = ((uint64_t)getpid() << 32) ^ now_ns() ^ 0x9E3779B97F4A7C15ull;
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* Set up once; false in the child of a vfork (or a clone that skipped the fork handlers), which
 * runs in its parent's memory: it must leave the fd table and the log alone (Python's
 * subprocess closes every fd there before exec). */
static inline int setup(void) {
    pthread_once(&once, init);
    return getpid() == owner;
}

/* -- the fd table (caller holds mu) -------------------------------------------------------- */
static struct ent *get(int fd) {
    if (fd < 0 || (size_t)fd >= tab_n)
        return NULL;
    return tab[fd].kind ? &tab[fd] : NULL;
}

static void forget(int fd) {
    if (fd >= 0 && (size_t)fd < tab_n) {
        free(tab[fd].path);
        memset(&tab[fd], 0, sizeof tab[fd]);
    }
}

static void remember(int fd, const char *path, uint64_t ino, uint8_t kind, int flags) {
    if (fd < 0)
        return;
    if ((size_t)fd >= tab_n) {
        size_t n = tab_n ? tab_n : 256;
        while (n <= (size_t)fd)
            n *= 2;
        struct ent *t = realloc(tab, n * sizeof *t);
        if (t == NULL)
            die("out of memory");
        memset(t + tab_n, 0, (n - tab_n) * sizeof *t);
        tab = t;
        tab_n = n;
    }
    forget(fd);
    tab[fd].path = strdup(path);
    tab[fd].ino = ino;
    tab[fd].kind = kind;
    tab[fd].append = (flags & O_APPEND) != 0;
    tab[fd].syncw = (flags & (O_SYNC | O_DSYNC)) != 0;
    size_t len = strlen(path);
    tab[fd].shm = len > 4 && strcmp(path + len - 4, "-shm") == 0;
}

static void copy_ent(int from, int to) {
    struct ent *e = get(from);
    if (e == NULL) {
        forget(to);
        return;
    }
    struct ent copy = *e;
    copy.path = strdup(e->path);
    int flags = (copy.append ? O_APPEND : 0) | (copy.syncw ? O_SYNC : 0);
    remember(to, copy.path, copy.ino, copy.kind, flags);
    free(copy.path);
}

/* -- the log (caller holds mu) ------------------------------------------------------------- */
static void emit(uint16_t op, uint16_t flags, int fd, int64_t offset, uint64_t ino,
                 const char *path, const char *path2, const struct iovec *data, int ndata,
                 size_t datalen) {
    if (log_fd < 0)
        return;
    struct rec h = {MAGIC, op, flags, (uint32_t)getpid(), fd, offset, datalen,
                    path ? (uint32_t)strlen(path) : 0, path2 ? (uint32_t)strlen(path2) : 0,
                    ino, now_ns()};
    struct iovec small[8];
    struct iovec *iov = small;
    char *gathered = NULL;
    int n = 0;
    if (ndata > 5) { /* gather many pieces into one buffer */
        gathered = malloc(datalen ? datalen : 1);
        if (gathered == NULL)
            die("out of memory");
        size_t at = 0;
        for (int i = 0; i < ndata && at < datalen; i++) {
            size_t take = data[i].iov_len < datalen - at ? data[i].iov_len : datalen - at;
            memcpy(gathered + at, data[i].iov_base, take);
            at += take;
        }
    }
    iov[n++] = (struct iovec){&h, sizeof h};
    if (h.path_len)
        iov[n++] = (struct iovec){(void *)path, h.path_len};
    if (h.path2_len)
        iov[n++] = (struct iovec){(void *)path2, h.path2_len};
    if (gathered != NULL) {
        iov[n++] = (struct iovec){gathered, datalen};
    } else {
        size_t left = datalen;
        for (int i = 0; i < ndata && left > 0; i++) {
            size_t take = data[i].iov_len < left ? data[i].iov_len : left;
            iov[n++] = (struct iovec){data[i].iov_base, take};
            left -= take;
        }
    }
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    ssize_t w;
    do {
        w = r_writev(log_fd, iov, n);
    } while (w < 0 && errno == EINTR);
    free(gathered);
    if (w != (ssize_t)total)
        die("cannot append to the log (a short log would hide writes)");
    n_records++;
}

static void emit_buf(uint16_t op, uint16_t flags, int fd, int64_t offset, uint64_t ino,
                     const char *path, const void *buf, size_t len) {
    struct iovec one = {(void *)buf, len};
    emit(op, flags, fd, offset, ino, path, NULL, &one, len ? 1 : 0, len);
}

static int64_t log_position(void) {
    return log_fd < 0 ? 0 : (int64_t)lseek(log_fd, 0, SEEK_END);
}

static void after_fork_child(void) {
    pthread_mutex_init(&mu, NULL);
    owner = getpid();
    rng_state ^= ((uint64_t)getpid() << 17) ^ now_ns();
    if (log_fd >= 0)
        emit(OP_FORK, 0, -1, (int64_t)getppid(), 0, NULL, NULL, NULL, 0, 0);
}

static void unsupported(int fd, const char *path, const char *what) {
    emit_buf(OP_UNSUPPORTED, 0, fd, 0, 0, path, what, strlen(what));
}

/* -- opening ------------------------------------------------------------------------------- */
static int open_tracked(int dirfd, const char *path, int flags, mode_t mode, int kind,
                        const char *norm, int (*call)(int, const char *, int, mode_t)) {
    /* A creating open holds the locks across the call, so that "created" is exact across
     * threads and shimmed processes. Any other open (which may block: a FIFO) runs unlocked
     * and is logged right after. */
    int existed = 1, hold = 0;
    if (kind == 1 && (flags & O_CREAT)) {
        pthread_mutex_lock(&mu);
        if (log_fd >= 0)
            flock(log_fd, LOCK_EX);
        struct stat before;
        existed = fstatat(dirfd, path, &before, 0) == 0;
        hold = !existed || S_ISREG(before.st_mode);
        if (!hold) {
            if (log_fd >= 0)
                flock(log_fd, LOCK_UN);
            pthread_mutex_unlock(&mu);
        }
    }
    int fd = call(dirfd, path, flags, mode);
    int saved = errno;
    if (!hold)
        pthread_mutex_lock(&mu);
    if (fd >= 0) {
        struct stat st;
        uint64_t ino = fstat(fd, &st) == 0 ? (uint64_t)st.st_ino : 0;
        if (kind == 2) {
            remember(fd, norm, ino, K_MARKER, flags);
        } else if ((flags & __O_TMPFILE) == __O_TMPFILE) {
            forget(fd);
            unsupported(fd, norm, "O_TMPFILE");
        } else if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
            forget(fd); /* a FIFO, socket or device: no content to lose */
        } else {
            int isdir = S_ISDIR(st.st_mode);
            remember(fd, norm, ino, isdir ? K_DIR : K_FILE, flags);
            uint16_t f = (uint16_t)((existed ? 0 : F_CREATED) | (isdir ? F_ISDIR : 0) |
                                    ((flags & (O_SYNC | O_DSYNC)) ? F_SYNCWRITES : 0) |
                                    ((flags & O_TRUNC) && !isdir ? F_TRUNC : 0));
            emit(OP_OPEN, f, fd, 0, ino, norm, NULL, NULL, 0, 0);
        }
    }
    if (hold && log_fd >= 0)
        flock(log_fd, LOCK_UN);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return fd;
}

static int call_openat(int dirfd, const char *path, int flags, mode_t mode) {
    return r_openat(dirfd, path, flags, mode);
}

static int do_open(int dirfd, const char *path, int flags, mode_t mode) {
    if (!setup())
        return r_openat(dirfd, path, flags, mode);
    char norm[PATH_MAX];
    int kind = classify(dirfd, path, norm);
    if (kind)
        return open_tracked(dirfd, path, flags, mode, kind, norm, call_openat);
    int fd = r_openat(dirfd, path, flags, mode);
    if (fd >= 0) {
        int saved = errno;
        pthread_mutex_lock(&mu);
        forget(fd); /* a stale entry (an fd closed behind our back) must not track this file */
        pthread_mutex_unlock(&mu);
        errno = saved;
    }
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(AT_FDCWD, path, flags | O_LARGEFILE, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return do_open(dirfd, path, flags | O_LARGEFILE, mode);
}

int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);
int __open_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
int __open64_2(const char *path, int flags) {
    return do_open(AT_FDCWD, path, flags | O_LARGEFILE, 0);
}
int __openat_2(int dirfd, const char *path, int flags) { return do_open(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char *path, int flags) {
    return do_open(dirfd, path, flags | O_LARGEFILE, 0);
}

int creat(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode) {
    return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC | O_LARGEFILE, mode);
}

/* -- writing ------------------------------------------------------------------------------- */
/* Log a completed write of `done` bytes; `at` is its offset, or -1 for "ended at the file
 * position". Caller holds mu and e != NULL. */
static void wrote(int fd, struct ent *e, int64_t at, const struct iovec *iov, int cnt,
                  ssize_t done) {
    if (done <= 0)
        return;
    if (e->kind == K_MARKER) {
        emit(OP_MARK, 0, fd, 0, 0, NULL, NULL, iov, cnt, (size_t)done);
        return;
    }
    if (at < 0) {
        off_t end = lseek(fd, 0, SEEK_CUR);
        at = (int64_t)end - done;
    } else if (e->append) { /* Linux appends a pwrite on an O_APPEND file */
        struct stat st;
        fstat(fd, &st);
        at = (int64_t)st.st_size - done;
    }
    emit(OP_WRITE, 0, fd, at, e->ino, NULL, NULL, iov, cnt, (size_t)done);
    if (e->syncw)
        emit(OP_SYNC, F_DATASYNC, fd, log_position(), e->ino, NULL, NULL, NULL, 0, 0);
}

#define WRITE_BODY(CALL, AT, IOV, CNT)                         \
    if (!setup())                                              \
        return CALL;                                           \
    pthread_mutex_lock(&mu);                                   \
    struct ent *e = get(fd);                                   \
    if (e == NULL || e->kind == K_DIR || log_fd < 0) {         \
        pthread_mutex_unlock(&mu);                             \
        return CALL;                                           \
    }                                                          \
    ssize_t done = CALL;                                       \
    int saved = errno;                                         \
    wrote(fd, e, AT, IOV, CNT, done);                          \
    pthread_mutex_unlock(&mu);                                 \
    errno = saved;                                             \
    return done;

ssize_t write(int fd, const void *buf, size_t n) {
    struct iovec one = {(void *)buf, n};
    WRITE_BODY(r_write(fd, buf, n), -1, &one, 1)
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    struct iovec one = {(void *)buf, n};
    WRITE_BODY(r_pwrite(fd, buf, n, off), (int64_t)off, &one, 1)
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    struct iovec one = {(void *)buf, n};
    WRITE_BODY(r_pwrite64(fd, buf, n, off), (int64_t)off, &one, 1)
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    WRITE_BODY(r_writev(fd, iov, cnt), -1, iov, cnt)
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    WRITE_BODY(r_pwritev(fd, iov, cnt, off), (int64_t)off, iov, cnt)
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    WRITE_BODY(r_pwritev64(fd, iov, cnt, off), (int64_t)off, iov, cnt)
}

/* pwritev2: offset -1 means the file position; RWF_APPEND appends; RWF_(D)SYNC syncs. */
static ssize_t pwritev2_common(int fd, const struct iovec *iov, int cnt, int64_t off, int flags,
                               int wide) {
    if (!setup())
        return wide ? r_pwritev64v2(fd, iov, cnt, off, flags)
                    : r_pwritev2(fd, iov, cnt, (off_t)off, flags);
    pthread_mutex_lock(&mu);
    struct ent *e = get(fd);
    ssize_t done = wide ? r_pwritev64v2(fd, iov, cnt, off, flags)
                        : r_pwritev2(fd, iov, cnt, (off_t)off, flags);
    int saved = errno;
    if (e != NULL && e->kind != K_DIR) {
        uint8_t append = e->append, syncw = e->syncw;
#ifdef RWF_APPEND
        if (flags & RWF_APPEND)
            e->append = 1;
#endif
        if (flags & (RWF_DSYNC | RWF_SYNC))
            e->syncw = 1;
        wrote(fd, e, off == -1 ? -1 : off, iov, cnt, done);
        e->append = append;
        e->syncw = syncw;
    }
    pthread_mutex_unlock(&mu);
    errno = saved;
    return done;
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    return pwritev2_common(fd, iov, cnt, (int64_t)off, flags, 0);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int flags) {
    return pwritev2_common(fd, iov, cnt, (int64_t)off, flags, 1);
}

/* -- sizes --------------------------------------------------------------------------------- */
static int truncated(int fd, int64_t len, int r) {
    int saved = errno;
    if (r == 0) {
        struct ent *e = get(fd);
        if (e != NULL && e->kind == K_FILE)
            emit(OP_TRUNCATE, 0, fd, len, e->ino, NULL, NULL, NULL, 0, 0);
    }
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int ftruncate(int fd, off_t len) {
    if (!setup())
        return r_ftruncate(fd, len);
    pthread_mutex_lock(&mu);
    return truncated(fd, (int64_t)len, r_ftruncate(fd, len));
}

int ftruncate64(int fd, off64_t len) {
    if (!setup())
        return r_ftruncate64(fd, len);
    pthread_mutex_lock(&mu);
    return truncated(fd, (int64_t)len, r_ftruncate64(fd, len));
}

static int path_truncate(const char *path, int64_t len, int wide) {
    char norm[PATH_MAX];
    if (!setup() || classify(AT_FDCWD, path, norm) != 1)
        return wide ? r_truncate64(path, len) : r_truncate(path, (off_t)len);
    pthread_mutex_lock(&mu);
    int r = wide ? r_truncate64(path, len) : r_truncate(path, (off_t)len);
    int saved = errno;
    if (r == 0)
        emit(OP_TRUNCATE, 0, -1, len, 0, norm, NULL, NULL, 0, 0);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int truncate(const char *path, off_t len) { return path_truncate(path, (int64_t)len, 0); }
int truncate64(const char *path, off64_t len) { return path_truncate(path, (int64_t)len, 1); }

/* An allocation that may grow the file: zero bytes up to off + len. */
static void extended(int fd, int mode, int64_t off, int64_t len, int ok) {
    struct ent *e = get(fd);
    if (!ok || e == NULL || e->kind != K_FILE)
        return;
    if (mode == 0)
        emit(OP_EXTEND, 0, fd, off + len, e->ino, NULL, NULL, NULL, 0, 0);
    else if (mode != FALLOC_FL_KEEP_SIZE)
        unsupported(fd, e->path, "fallocate mode that changes content");
}

int fallocate(int fd, int mode, off_t off, off_t len) {
    if (!setup())
        return r_fallocate(fd, mode, off, len);
    pthread_mutex_lock(&mu);
    int r = r_fallocate(fd, mode, off, len);
    int saved = errno;
    extended(fd, mode, off, len, r == 0);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int fallocate64(int fd, int mode, off64_t off, off64_t len) {
    if (!setup())
        return r_fallocate64(fd, mode, off, len);
    pthread_mutex_lock(&mu);
    int r = r_fallocate64(fd, mode, off, len);
    int saved = errno;
    extended(fd, mode, off, len, r == 0);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int posix_fallocate(int fd, off_t off, off_t len) {
    if (!setup())
        return r_posix_fallocate(fd, off, len);
    pthread_mutex_lock(&mu);
    int r = r_posix_fallocate(fd, off, len);
    extended(fd, 0, off, len, r == 0);
    pthread_mutex_unlock(&mu);
    return r;
}

int posix_fallocate64(int fd, off64_t off, off64_t len) {
    if (!setup())
        return r_posix_fallocate64(fd, off, len);
    pthread_mutex_lock(&mu);
    int r = r_posix_fallocate64(fd, off, len);
    extended(fd, 0, off, len, r == 0);
    pthread_mutex_unlock(&mu);
    return r;
}

/* -- syncing ------------------------------------------------------------------------------- */
static void stall(void) {
    if (delay_hi_ms <= 0)
        return;
    pthread_mutex_lock(&mu);
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    double u = (double)(rng_state >> 11) / 9007199254740992.0;
    pthread_mutex_unlock(&mu);
    double ms = delay_lo_ms + (delay_hi_ms - delay_lo_ms) * u;
    uint64_t start = now_ns();
    struct timespec t = {(time_t)(ms / 1000), (long)((ms - 1000 * (long)(ms / 1000)) * 1e6)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
    uint64_t slept = now_ns() - start;
    pthread_mutex_lock(&mu);
    n_delayed++;
    delayed_ns += slept;
    pthread_mutex_unlock(&mu);
}

static int do_sync(int fd, int datasync) {
    if (!setup())
        return datasync ? r_fdatasync(fd) : r_fsync(fd);
    int saved_errno = errno;
    pthread_mutex_lock(&mu);
    struct ent *e = get(fd);
    int tracked = e != NULL && (e->kind == K_FILE || e->kind == K_DIR);
    uint64_t ino = tracked ? e->ino : 0;
    uint16_t flags = (uint16_t)((datasync ? F_DATASYNC : 0) |
                                (tracked && e->kind == K_DIR ? F_ISDIR : 0));
    int64_t covers = tracked ? log_position() : 0; /* what was written before the call */
    if (tracked)
        n_syncs++;
    pthread_mutex_unlock(&mu);
    if (!tracked)
        return datasync ? r_fdatasync(fd) : r_fsync(fd);
    stall();
    if (sync_mode == SYNC_DROP) {
        errno = saved_errno;
        return 0;
    }
    int r = 0;
    if (sync_mode == SYNC_REAL)
        r = datasync ? r_fdatasync(fd) : r_fsync(fd);
    int saved = errno;
    if (r == 0) {
        pthread_mutex_lock(&mu);
        emit(OP_SYNC, flags, fd, covers, ino, NULL, NULL, NULL, 0, 0);
        pthread_mutex_unlock(&mu);
    }
    errno = r == 0 ? saved_errno : saved;
    return r;
}

int fsync(int fd) { return do_sync(fd, 0); }
int fdatasync(int fd) { return do_sync(fd, 1); }

void sync(void) {
    if (!setup()) {
        r_sync();
        return;
    }
    pthread_mutex_lock(&mu);
    int64_t covers = log_position();
    pthread_mutex_unlock(&mu);
    r_sync();
    if (sync_mode != SYNC_DROP && dir_len) {
        pthread_mutex_lock(&mu);
        emit(OP_SYNC_ALL, 0, -1, covers, 0, NULL, NULL, NULL, 0, 0);
        pthread_mutex_unlock(&mu);
    }
}

int syncfs(int fd) {
    if (!setup())
        return r_syncfs(fd);
    pthread_mutex_lock(&mu);
    int64_t covers = log_position();
    pthread_mutex_unlock(&mu);
    int r = r_syncfs(fd);
    int saved = errno;
    if (r == 0 && sync_mode != SYNC_DROP && dir_len) {
        pthread_mutex_lock(&mu);
        emit(OP_SYNC_ALL, 0, fd, covers, 0, NULL, NULL, NULL, 0, 0);
        pthread_mutex_unlock(&mu);
    }
    errno = saved;
    return r;
}

/* -- descriptors --------------------------------------------------------------------------- */
int close(int fd) {
    if (!setup())
        return r_close(fd);
    pthread_mutex_lock(&mu);
    struct ent *e = get(fd);
    if (e != NULL && e->kind != K_MARKER)
        emit(OP_CLOSE, 0, fd, 0, e->ino, NULL, NULL, NULL, 0, 0);
    forget(fd);
    int r = fd == log_fd ? 0 : r_close(fd); /* the log stays open whatever the program does */
    int saved = errno;
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int close_range(unsigned int first, unsigned int last, int flags) {
    if (!setup())
        return r_close_range(first, last, flags);
    pthread_mutex_lock(&mu);
    int r = r_close_range(first, last, flags);
    int saved = errno;
    if (r == 0 && !(flags & CLOSE_RANGE_CLOEXEC)) {
        for (size_t fd = first; fd < tab_n && fd <= last; fd++) {
            struct ent *e = get((int)fd);
            if (e != NULL && e->kind != K_MARKER)
                emit(OP_CLOSE, 0, (int)fd, 0, e->ino, NULL, NULL, NULL, 0, 0);
            forget((int)fd);
        }
    }
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

static int duplicated(int old, int fd) {
    int saved = errno;
    if (fd >= 0 && fd != old) {
        struct ent *e = get(old);
        struct ent *was = get(fd);
        if (e == NULL && was != NULL && was->kind != K_MARKER)
            emit(OP_CLOSE, 0, fd, 0, was->ino, NULL, NULL, NULL, 0, 0);
        copy_ent(old, fd);
        if (e != NULL && e->kind != K_MARKER)
            emit(OP_DUP, 0, fd, old, e->ino, NULL, NULL, NULL, 0, 0);
    }
    pthread_mutex_unlock(&mu);
    errno = saved;
    return fd;
}

int dup(int old) {
    if (!setup())
        return r_dup(old);
    pthread_mutex_lock(&mu);
    return duplicated(old, r_dup(old));
}

int dup2(int old, int fd) {
    if (!setup())
        return r_dup2(old, fd);
    pthread_mutex_lock(&mu);
    return duplicated(old, r_dup2(old, fd));
}

int dup3(int old, int fd, int flags) {
    if (!setup())
        return r_dup3(old, fd, flags);
    pthread_mutex_lock(&mu);
    return duplicated(old, r_dup3(old, fd, flags));
}

static int fcntl_common(int fd, int cmd, void *arg, int wide) {
    if (!setup() || (cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC))
        return wide ? r_fcntl64(fd, cmd, arg) : r_fcntl(fd, cmd, arg);
    pthread_mutex_lock(&mu);
    return duplicated(fd, wide ? r_fcntl64(fd, cmd, arg) : r_fcntl(fd, cmd, arg));
}

int fcntl(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *); /* as glibc itself reads it */
    va_end(ap);
    return fcntl_common(fd, cmd, arg, 0);
}

int fcntl64(int fd, int cmd, ...) {
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl_common(fd, cmd, arg, 1);
}

/* -- what the log cannot follow ------------------------------------------------------------ */
static void check_map(int prot, int flags, int fd) {
    if (fd < 0 || !(prot & PROT_WRITE) || !(flags & MAP_SHARED))
        return;
    pthread_mutex_lock(&mu);
    struct ent *e = get(fd);
    if (e != NULL && e->kind == K_FILE && !e->shm)
        unsupported(fd, e->path, "writable shared mapping");
    pthread_mutex_unlock(&mu);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (setup())
        check_map(prot, flags, fd);
    return r_mmap(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off) {
    if (setup())
        check_map(prot, flags, fd);
    return r_mmap64(addr, len, prot, flags, fd, off);
}

static void check_out(int fd, const char *what) {
    pthread_mutex_lock(&mu);
    struct ent *e = get(fd);
    if (e != NULL && e->kind == K_FILE)
        unsupported(fd, e->path, what);
    pthread_mutex_unlock(&mu);
}

ssize_t copy_file_range(int in, off64_t *in_off, int out, off64_t *out_off, size_t len,
                        unsigned int flags) {
    if (setup())
        check_out(out, "copy_file_range into a tracked file");
    return r_copy_file_range(in, in_off, out, out_off, len, flags);
}

ssize_t sendfile(int out, int in, off_t *off, size_t count) {
    if (setup())
        check_out(out, "sendfile into a tracked file");
    return r_sendfile(out, in, off, count);
}

ssize_t sendfile64(int out, int in, off64_t *off, size_t count) {
    if (setup())
        check_out(out, "sendfile into a tracked file");
    return r_sendfile64(out, in, off, count);
}

/* -- names --------------------------------------------------------------------------------- */
static int renamed(int olddirfd, const char *old, int newdirfd, const char *new,
                   unsigned int flags, int how) {
    char a[PATH_MAX], b[PATH_MAX];
    int mine = setup();
    int in_a = mine && classify(olddirfd, old, a) == 1;
    int in_b = mine && classify(newdirfd, new, b) == 1;
#define CALL_RENAME (how == 0 ? r_rename(old, new) : how == 1 ? r_renameat(olddirfd, old, newdirfd, new) \
                     : r_renameat2(olddirfd, old, newdirfd, new, flags))
    if (!in_a && !in_b)
        return CALL_RENAME;
    pthread_mutex_lock(&mu);
    if (log_fd >= 0)
        flock(log_fd, LOCK_EX);
    int r = CALL_RENAME;
    int saved = errno;
    if (r == 0) {
        if (in_a && in_b && !(flags & RENAME_EXCHANGE))
            emit(OP_RENAME, 0, -1, 0, 0, a, b, NULL, 0, 0);
        else if (in_a && in_b)
            unsupported(-1, a, "RENAME_EXCHANGE");
        else if (in_a)
            emit(OP_UNLINK, 0, -1, 0, 0, a, NULL, NULL, 0, 0);
        else
            unsupported(-1, b, "a file renamed into the tracked folder from outside it");
    }
    if (log_fd >= 0)
        flock(log_fd, LOCK_UN);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
#undef CALL_RENAME
}

int rename(const char *old, const char *new) { return renamed(AT_FDCWD, old, AT_FDCWD, new, 0, 0); }
int renameat(int od, const char *old, int nd, const char *new) {
    return renamed(od, old, nd, new, 0, 1);
}
int renameat2(int od, const char *old, int nd, const char *new, unsigned int flags) {
    return renamed(od, old, nd, new, flags, 2);
}

static int unlinked(int dirfd, const char *path, int flags, int how) {
    char norm[PATH_MAX];
    if (!setup() || (flags & AT_REMOVEDIR) || classify(dirfd, path, norm) != 1)
        return how == 0 ? r_unlink(path) : r_unlinkat(dirfd, path, flags);
    pthread_mutex_lock(&mu);
    if (log_fd >= 0)
        flock(log_fd, LOCK_EX);
    int r = how == 0 ? r_unlink(path) : r_unlinkat(dirfd, path, flags);
    int saved = errno;
    if (r == 0)
        emit(OP_UNLINK, 0, -1, 0, 0, norm, NULL, NULL, 0, 0);
    if (log_fd >= 0)
        flock(log_fd, LOCK_UN);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return r;
}

int unlink(const char *path) { return unlinked(AT_FDCWD, path, 0, 0); }
int unlinkat(int dirfd, const char *path, int flags) { return unlinked(dirfd, path, flags, 1); }

/* -- counters at exit ---------------------------------------------------------------------- */
__attribute__((destructor)) static void report(void) {
    if (stats_path[0] == '\0' || r_open == NULL)
        return;
    char line[256];
    int n = snprintf(line, sizeof line,
                     "pid=%d syncs=%lu delayed=%lu delayed_ms=%.3f records=%lu\n", (int)getpid(),
                     n_syncs, n_delayed, (double)delayed_ns / 1e6, n_records);
    int fd = r_open(stats_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && n > 0) {
        r_write(fd, line, (size_t)n);
        r_close(fd);
    }
}
