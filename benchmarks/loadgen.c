/* loadgen.c: the load generator of `python -m benchmarks`, in C.
 *
 * The same command line and the same JSON line as benchmarks/loadgen.py (its
 * fallback when there is no C compiler), so the runner has one code path; in
 * C so that the client never caps what it measures (the Python generator tops
 * out near 500k lines/s in the pipelined scenario). benchmarks/native.py
 * compiles it (cc -O2, with OpenSSL for --tls when its headers are there).
 *
 *   loadgen SCENARIO --port P [--conns N] [--depth D] [--duration S]
 *           [--warmup S] [--server-pid PID] [--interval-ms MS] [--size BYTES] [--tls]
 *
 * Scenarios (64-byte lines unless said otherwise):
 *   pingpong   --conns connections, one line in flight on each; p50/p99 round trip
 *   pipelined  --conns connections with --depth lines in flight each
 *   connects   --conns concurrent clients: connect (--tls: and handshake), send a
 *              line, read it back, close, over and over
 *   idle       open --conns connections that each exchange one line, then read the
 *              server's VmRSS before and after (--server-pid)
 *   sparse     --conns connections, each sending one line every --interval-ms
 *              (staggered); the server's CPU % and CPU per message
 *   bulk       --conns connections with --depth messages of --size bytes in flight,
 *              each a 4-byte big-endian length and the payload; MB/s (10^6 bytes)
 *
 * Replies are never parsed: line replies are counted by their newlines (a server
 * may end them with CRLF), bulk replies by their bytes (every message-length bytes
 * completes one: a length-prefixed echo returns the stream it was sent).
 * The server's CPU time comes from /proc/PID/task/STAR/schedstat, its memory from
 * /proc/PID/status. Every wait is bounded: no progress for 5 s is an error.
 * The result is one JSON object on the last line of stdout (exit status 0), or
 * {"error": ...} (exit status 1).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

typedef unsigned long long u64;

#define LINE_SIZE 64
#define READ_SIZE 262144  /* as asyncio's transports */
#define MAX_SAMPLES 2000000
#define STALL_NS 5000000000ULL
#define MAX_EVENTS 256

enum { CONNECTING, HANDSHAKE, WAITING };

struct client {
    int fd;
    int armed;       /* EPOLLOUT registered */
    int state;       /* connects only */
    u64 queued;      /* bytes to send, not yet taken by the kernel */
    u64 sent;        /* bytes the kernel took */
    u64 received;    /* bytes of replies */
    u64 newlines;    /* newlines received (line scenarios) */
    u64 replies;     /* complete replies */
    u64 sent_at;     /* when the reply awaited was asked for (ns) */
    u64 due;         /* sparse: when the next line goes (ns) */
#ifdef WITH_TLS
    SSL *ssl;
    size_t retry;    /* an SSL_write to repeat with this length */
#endif
};

static struct {
    const char *scenario;
    int port, conns, depth, size, tls;
    double duration, warmup, interval_ms;
    long pid;
} opt = {.conns = 1, .depth = 16, .size = 65536, .duration = 5, .warmup = 1, .interval_ms = 20};

static char *pattern;      /* one message repeated: any send is one contiguous slice */
static size_t pattern_len;
static size_t period;      /* bytes per message */
static int lines = 1;      /* replies are lines (else bulk messages) */
static char rbuf[READ_SIZE];
static uint32_t *samples;  /* round trips (ns), at most MAX_SAMPLES */
static size_t nsamples;
static int epfd = -1;
#ifdef WITH_TLS
static SSL_CTX *tls_ctx;
#endif

/* -- results and errors ---------------------------------------------------- */

static void fail(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 32) *p = ' ';
    printf("{\"error\": \"LoadError: %s\"}\n", msg);
    exit(1);
}

static u64 now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (u64)ts.tv_sec * 1000000000ULL + (u64)ts.tv_nsec;
}

/* CPU time the server has used so far, in ns (all its threads); 0 without --server-pid. */
static u64 server_cpu_ns(void) {
    if (!opt.pid) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/task", opt.pid);
    DIR *dir = opendir(path);
    if (!dir) return 0;
    u64 total = 0;
    struct dirent *d;
    while ((d = readdir(dir))) {
        if (d->d_name[0] == '.') continue;
        char stat[300];
        snprintf(stat, sizeof stat, "/proc/%ld/task/%s/schedstat", opt.pid, d->d_name);
        FILE *f = fopen(stat, "r");
        if (!f) continue;
        u64 ns = 0;
        if (fscanf(f, "%llu", &ns) == 1) total += ns;
        fclose(f);
    }
    closedir(dir);
    return total;
}

static long rss_kib(void) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", opt.pid);
    FILE *f = fopen(path, "r");
    if (!f) fail("no /proc entry for pid %ld", opt.pid);
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kib = strtol(line + 6, NULL, 10);
    fclose(f);
    if (kib < 0) fail("no VmRSS for pid %ld", opt.pid);
    return kib;
}

static void record(u64 ns) {
    if (nsamples < MAX_SAMPLES) samples[nsamples++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int by_value(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The measured window: warm-up first, then `duration` seconds of counting. */
struct meter {
    u64 from, end, t0, cpu0, count;
    int on;
};

static struct meter meter_new(void) {
    struct meter m = {0};
    m.from = now_ns() + (u64)(opt.warmup * 1e9);
    m.end = m.from + (u64)(opt.duration * 1e9);
    return m;
}

/* Start measuring once the warm-up is over; false once the window has ended. */
static int meter_tick(struct meter *m, u64 now) {
    if (!m->on && now >= m->from) {
        m->on = 1;
        nsamples = 0;
        m->cpu0 = server_cpu_ns();
        m->t0 = now_ns();
    }
    return now < m->end;
}

/* The JSON line; `extra` is appended inside the object (starts with a comma). */
static void report(struct meter *m, double unit, const char *extra) {
    double elapsed = m->on ? (double)(now_ns() - m->t0) / 1e9 : 0;
    double cpu = m->on && opt.pid ? (double)(server_cpu_ns() - m->cpu0) : 0;
    if (elapsed <= 0) fail("the measured window never started");
    printf("{\"rate\": %.6g, \"count\": %llu, \"elapsed\": %.6g", m->count * unit / elapsed,
           m->count, elapsed);
    if (opt.pid && m->count)
        printf(", \"cpu_us\": %.6g, \"cpu_util\": %.6g", cpu / 1000.0 / (double)m->count,
               cpu / 1e9 / elapsed);
    if (nsamples) {
        qsort(samples, nsamples, sizeof *samples, by_value);
        size_t p99 = nsamples * 99 / 100;
        printf(", \"p50_us\": %.6g, \"p99_us\": %.6g", samples[nsamples / 2] / 1000.0,
               samples[p99 < nsamples ? p99 : nsamples - 1] / 1000.0);
    } else {
        printf(", \"p50_us\": null, \"p99_us\": null");
    }
    printf("%s}\n", extra ? extra : "");
}

/* -- connections: plain or TLS ------------------------------------------------- */

static void watch(struct client *c, unsigned events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
}

static int socket_to_server(int blocking) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) fail("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS)
        fail("connect: %s", strerror(errno));
    return fd;
}

static void tls_attach(struct client *c) {
#ifdef WITH_TLS
    c->ssl = SSL_new(tls_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) fail("SSL_new failed");
    SSL_set_connect_state(c->ssl);
#else
    (void)c;
#endif
}

/* A connected client, TLS handshake done, non-blocking from then on. */
static void open_ready(struct client *c) {
    memset(c, 0, sizeof *c);
    c->fd = socket_to_server(1);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
#ifdef WITH_TLS
    if (opt.tls) {
        tls_attach(c);
        if (SSL_do_handshake(c->ssl) != 1) fail("TLS handshake failed");
    }
#endif
}

static void set_nonblocking(struct client *c) {
    int flags = fcntl(c->fd, F_GETFL);
    if (flags < 0 || fcntl(c->fd, F_SETFL, flags | O_NONBLOCK) < 0)
        fail("fcntl: %s", strerror(errno));
}

static void close_client(struct client *c) {
#ifdef WITH_TLS
    if (c->ssl) {
        SSL_shutdown(c->ssl);  /* a close_notify, not waiting for the server's */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
#endif
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

/* Bytes received (> 0), 0 if none now, -1 when the server closed. */
static ssize_t c_recv(struct client *c, char *buf, size_t n) {
#ifdef WITH_TLS
    if (c->ssl) {
        int got = SSL_read(c->ssl, buf, (int)n);
        if (got > 0) return got;
        int err = SSL_get_error(c->ssl, got);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return 0;
        return -1;
    }
#endif
    ssize_t got = recv(c->fd, buf, n, 0);
    if (got > 0) return got;
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    return -1;
}

/* Bytes the kernel took (0 if none now); fail() on errors. */
static size_t c_send(struct client *c, const char *buf, size_t n) {
#ifdef WITH_TLS
    if (c->ssl) {
        if (c->retry) n = c->retry;  /* OpenSSL wants the same write again */
        int put = SSL_write(c->ssl, buf, (int)n);
        if (put > 0) {
            c->retry = 0;
            return (size_t)put;
        }
        int err = SSL_get_error(c->ssl, put);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) fail("SSL_write failed");
        c->retry = n;
        return 0;
    }
#endif
    ssize_t put = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (put >= 0) return (size_t)put;
    if (errno == EAGAIN || errno == EINTR) return 0;
    fail("send: %s", strerror(errno));
    return 0;
}

/* Send what is queued, from the pattern; wait for EPOLLOUT if the kernel is full. */
static void flush(struct client *c, int in_epoll) {
    while (c->queued) {
        size_t off = (size_t)(c->sent % period);
        size_t n = pattern_len - off;
        if (n > c->queued) n = (size_t)c->queued;
        size_t put = c_send(c, pattern + off, n);
        if (!put) break;
        c->sent += put;
        c->queued -= put;
    }
    if (!in_epoll) return;
    int want = c->queued != 0;
    if (want != c->armed) {
        c->armed = want;
        watch(c, want ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
    }
}

static void ask(struct client *c, u64 messages, int in_epoll) {
    c->queued += messages * period;
    flush(c, in_epoll);
}

static u64 count_newlines(const char *p, size_t n) {
    u64 count = 0;
    const char *end = p + n;
    while ((p = memchr(p, '\n', (size_t)(end - p)))) {
        count++;
        p++;
    }
    return count;
}

/* Read what is there; return the replies it completed, or -1 if the server closed. */
static long long take_replies(struct client *c) {
    for (int round = 0; round < 16; round++) {
        ssize_t got = c_recv(c, rbuf, sizeof rbuf);
        if (got < 0) return -1;
        if (got == 0) break;
        c->received += (u64)got;
        if (lines) c->newlines += count_newlines(rbuf, (size_t)got);
#ifdef WITH_TLS
        if (c->ssl && SSL_has_pending(c->ssl)) continue;  /* more than one buffer held */
#endif
        break;
    }
    u64 before = c->replies;
    c->replies = lines ? c->newlines : c->received / period;
    return (long long)(c->replies - before);
}

static struct client *open_all(int n) {
    struct client *cs = calloc((size_t)n, sizeof *cs);
    if (!cs) fail("out of memory");
    for (int i = 0; i < n; i++) open_ready(&cs[i]);
    for (int i = 0; i < n; i++) {
        set_nonblocking(&cs[i]);
        watch(&cs[i], EPOLLIN, EPOLL_CTL_ADD);
    }
    return cs;
}

static void close_all(struct client *cs, int n) {
    for (int i = 0; i < n; i++) close_client(&cs[i]);
    free(cs);
}

static int wait_events(struct epoll_event *ev, int timeout_ms) {
    int k = epoll_wait(epfd, ev, MAX_EVENTS, timeout_ms);
    if (k < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
    return k < 0 ? 0 : k;
}

/* Flush on EPOLLOUT; on input, the replies it completed (-1: the server closed). */
static long long on_event(struct client *c, unsigned events) {
    if (events & EPOLLOUT) flush(c, 1);
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return 0;
    return take_replies(c);
}

/* -- scenarios ------------------------------------------------------------------ */

/* One connection: blocking calls are the cheapest client (no epoll at all). */
static void pingpong_one(void) {
    struct client c;
    open_ready(&c);
    struct meter m = meter_new();
    for (;;) {
        u64 t0 = now_ns();
        ask(&c, 1, 0);
        if (c.queued) fail("the server took no request within 5 s");
        for (;;) {
            u64 before = c.received;
            long long r = take_replies(&c);
            if (r < 0) fail("the server closed the connection");
            if (r > 0) break;
            if (c.received == before) fail("no reply within 5 s");
        }
        u64 t1 = now_ns();
        if (m.on) {
            m.count++;
            record(t1 - t0);
        }
        if ((m.count & 63) == 0 && !meter_tick(&m, t1)) break;
    }
    report(&m, 1, NULL);
    close_client(&c);
}

static void pingpong_many(void) {
    struct client *cs = open_all(opt.conns);
    struct meter m = meter_new();
    for (int i = 0; i < opt.conns; i++) {
        cs[i].sent_at = now_ns();
        ask(&cs[i], 1, 1);
    }
    struct epoll_event ev[MAX_EVENTS];
    for (;;) {
        int k = wait_events(ev, 5000);
        u64 now = now_ns();
        if (!k) fail("no reply within 5 s");
        if (!meter_tick(&m, now)) break;
        for (int i = 0; i < k; i++) {
            struct client *c = ev[i].data.ptr;
            long long r = on_event(c, ev[i].events);
            if (r < 0) fail("the server closed a connection");
            if (!r) continue;
            if (m.on) {
                m.count += (u64)r;
                record(now - c->sent_at);
            }
            c->sent_at = now_ns();
            ask(c, 1, 1);
        }
    }
    report(&m, 1, NULL);
    close_all(cs, opt.conns);
}

/* --depth messages in flight per connection; refill as many as came back. */
static void window(double unit) {
    struct client *cs = open_all(opt.conns);
    struct meter m = meter_new();
    for (int i = 0; i < opt.conns; i++) ask(&cs[i], (u64)opt.depth, 1);
    struct epoll_event ev[MAX_EVENTS];
    for (;;) {
        int k = wait_events(ev, 5000);
        if (!k) fail("no reply within 5 s");
        if (!meter_tick(&m, now_ns())) break;
        for (int i = 0; i < k; i++) {
            struct client *c = ev[i].data.ptr;
            long long r = on_event(c, ev[i].events);
            if (r < 0) fail("the server closed a connection");
            if (!r) continue;
            if (m.on) m.count += (u64)r;
            ask(c, (u64)r, 1);
        }
    }
    char extra[96] = "";
    if (unit != 1.0 && m.on)
        snprintf(extra, sizeof extra, ", \"msg_rate\": %.6g, \"size\": %d",
                 (double)m.count / ((double)(now_ns() - m.t0) / 1e9), opt.size);
    report(&m, unit, extra);
    close_all(cs, opt.conns);
}

/* Send the lines that are due (one per client per interval); the next due time. */
static u64 send_due(struct client *cs, u64 now, u64 interval, u64 *late, int counting) {
    u64 next = UINT64_MAX;
    for (int i = 0; i < opt.conns; i++) {
        struct client *c = &cs[i];
        if (c->due <= now) {
            if (c->replies * period == c->sent + c->queued) {
                c->sent_at = now;
                ask(c, 1, 1);
            } else if (counting) {
                (*late)++;  /* the last reply is not back yet: skip this one */
            }
            while (c->due <= now) c->due += interval;
        }
        if (c->due < next) next = c->due;
    }
    return next;
}

/* Each client sends one line per --interval-ms, staggered; replies are timed. */
static void sparse(void) {
    struct client *cs = open_all(opt.conns);
    struct meter m = meter_new();
    u64 interval = (u64)(opt.interval_ms * 1e6), start = now_ns(), late = 0, progress = start;
    for (int i = 0; i < opt.conns; i++) cs[i].due = start + interval * (u64)i / (u64)opt.conns;
    struct epoll_event ev[MAX_EVENTS];
    for (;;) {
        u64 now = now_ns();
        u64 next = send_due(cs, now, interval, &late, m.on);
        int k = wait_events(ev, next > now ? (int)((next - now + 999999) / 1000000) : 0);
        now = now_ns();
        if (!meter_tick(&m, now)) break;
        for (int i = 0; i < k; i++) {
            struct client *c = ev[i].data.ptr;
            long long r = on_event(c, ev[i].events);
            if (r < 0) fail("the server closed a connection");
            if (!r) continue;
            progress = now;
            if (m.on) {
                m.count += (u64)r;
                record(now - c->sent_at);
            }
        }
        if (now - progress > STALL_NS) fail("no reply within 5 s");
    }
    char extra[160];
    snprintf(extra, sizeof extra, ", \"late\": %llu, \"offered\": %.6g", late,
             opt.conns * 1000.0 / opt.interval_ms);
    report(&m, 1, extra);
    close_all(cs, opt.conns);
}

static void start_connect(struct client *c) {
    memset(c, 0, sizeof *c);
    c->fd = socket_to_server(0);
    c->state = CONNECTING;
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* The TLS handshake, one step: 1 done, 0 in progress, -1 failed. */
static int handshake_step(struct client *c) {
#ifdef WITH_TLS
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) return 1;
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) watch(c, EPOLLIN, EPOLL_CTL_MOD);
    else if (err == SSL_ERROR_WANT_WRITE) watch(c, EPOLLOUT, EPOLL_CTL_MOD);
    else return -1;
    return 0;
#else
    (void)c;
    return -1;
#endif
}

/* Advance one connect-request-reply-close client: 1 when it completed, -1 failed. */
static int connect_step(struct client *c, unsigned events) {
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & EPOLLERR)) return -1;
        c->state = HANDSHAKE;
        if (opt.tls) tls_attach(c);
    }
    if (c->state == HANDSHAKE) {
        int r = opt.tls ? handshake_step(c) : 1;
        if (r <= 0) return r;
        c->state = WAITING;
        ask(c, 1, 0);
        if (c->queued) return -1;
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        return 0;
    }
    long long r = take_replies(c);
    return r < 0 ? -1 : r > 0;
}

static void connects(void) {
    struct client *cs = calloc((size_t)opt.conns, sizeof *cs);
    if (!cs) fail("out of memory");
    for (int i = 0; i < opt.conns; i++) start_connect(&cs[i]);
    struct meter m = meter_new();
    u64 errors = 0;
    struct epoll_event ev[MAX_EVENTS];
    for (;;) {
        int k = wait_events(ev, 5000);
        if (!k) fail("no progress within 5 s");
        if (!meter_tick(&m, now_ns())) break;
        for (int i = 0; i < k; i++) {
            struct client *c = ev[i].data.ptr;
            int r = connect_step(c, ev[i].events);
            if (r == 0) continue;
            if (r < 0 && ++errors > 1000) fail("too many failed connections");
            if (r > 0 && m.on) m.count++;
            close_client(c);
            start_connect(c);
        }
    }
    char extra[48];
    snprintf(extra, sizeof extra, ", \"errors\": %llu", errors);
    report(&m, 1, extra);
    close_all(cs, opt.conns);
}

/* Open n connections at once and exchange one line on each; they stay open. */
static void open_batch(struct client *cs, int n, u64 deadline) {
    for (int i = 0; i < n; i++) start_connect(&cs[i]);
    int waiting = n;
    struct epoll_event ev[MAX_EVENTS];
    while (waiting) {
        if (now_ns() > deadline) fail("%d idle connections not set up in time", waiting);
        int k = wait_events(ev, 1000);
        for (int i = 0; i < k; i++) {
            struct client *c = ev[i].data.ptr;
            int r = connect_step(c, ev[i].events);
            if (r < 0) fail("an idle connection failed");
            if (r == 0) continue;
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
            waiting--;
        }
    }
}

/* The server's RSS per idle connection (each has exchanged one line). */
static void idle(void) {
    if (!opt.pid) fail("idle needs --server-pid");
    u64 deadline = now_ns() + 60000000000ULL;
    int warm = opt.conns < 100 ? opt.conns : 100;
    struct client *cs = calloc((size_t)opt.conns, sizeof *cs);
    if (!cs) fail("out of memory");
    open_batch(cs, warm, deadline);  /* warm the server's code paths */
    for (int i = 0; i < warm; i++) close_client(&cs[i]);
    usleep(500000);
    long before = rss_kib();
    for (int done = 0; done < opt.conns;) {
        int n = opt.conns - done < 200 ? opt.conns - done : 200;
        open_batch(cs + done, n, deadline);
        done += n;
    }
    usleep(500000);
    long after = rss_kib();
    double per = (double)(after - before) / opt.conns;
    printf("{\"rate\": %.6g, \"rss_before_kib\": %ld, \"rss_after_kib\": %ld, "
           "\"kib_per_conn\": %.6g, \"conns\": %d}\n", per, before, after, per, opt.conns);
    close_all(cs, opt.conns);
}

/* -- set-up ---------------------------------------------------------------------- */

static void make_pattern(int bulk) {
    int copies = bulk ? 2 : READ_SIZE / LINE_SIZE;
    lines = !bulk;
    period = bulk ? 4 + (size_t)opt.size : LINE_SIZE;
    pattern_len = period * (size_t)copies;
    pattern = malloc(pattern_len);
    if (!pattern) fail("out of memory");
    char *msg = pattern;
    if (bulk) {
        uint32_t size = htonl((uint32_t)opt.size);
        memcpy(msg, &size, 4);
        memset(msg + 4, 'b', (size_t)opt.size);
    } else {
        memset(msg, 'x', LINE_SIZE - 1);
        msg[LINE_SIZE - 1] = '\n';
    }
    for (int i = 1; i < copies; i++) memcpy(pattern + period * (size_t)i, msg, period);
}

static void setup_tls(void) {
#ifdef WITH_TLS
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx) fail("SSL_CTX_new failed");
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);  /* a self-signed test certificate */
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#else
    fail("built without TLS (no OpenSSL headers when it was compiled)");
#endif
}

static long raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen {pingpong,pipelined,connects,idle,sparse,bulk} --port P [--conns N]\n"
            "       [--depth D] [--duration S] [--warmup S] [--server-pid PID]\n"
            "       [--interval-ms MS] [--size BYTES] [--tls]\n");
    exit(2);
}

static void parse(int argc, char **argv) {
    if (argc < 2) usage();
    opt.scenario = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tls")) {
            opt.tls = 1;
            continue;
        }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--conns")) opt.conns = atoi(v);
        else if (!strcmp(a, "--depth")) opt.depth = atoi(v);
        else if (!strcmp(a, "--duration")) opt.duration = atof(v);
        else if (!strcmp(a, "--warmup")) opt.warmup = atof(v);
        else if (!strcmp(a, "--server-pid")) opt.pid = atol(v);
        else if (!strcmp(a, "--interval-ms")) opt.interval_ms = atof(v);
        else if (!strcmp(a, "--size")) opt.size = atoi(v);
        else usage();
    }
    if (opt.port <= 0 || opt.conns <= 0 || opt.depth <= 0 || opt.size <= 0 || opt.interval_ms <= 0)
        usage();
}

int main(int argc, char **argv) {
    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    long limit = raise_nofile();
    if (opt.conns + 100 > limit) fail("RLIMIT_NOFILE %ld too low for %d", limit, opt.conns);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    if (epfd < 0 || !samples) fail("set-up failed");
    if (opt.tls) setup_tls();
    const char *s = opt.scenario;
    make_pattern(!strcmp(s, "bulk"));
    if (!strcmp(s, "pingpong")) opt.conns == 1 ? pingpong_one() : pingpong_many();
    else if (!strcmp(s, "pipelined")) window(1.0);
    else if (!strcmp(s, "bulk")) window(opt.size / 1e6);
    else if (!strcmp(s, "sparse")) sparse();
    else if (!strcmp(s, "connects")) connects();
    else if (!strcmp(s, "idle") && !opt.tls) idle();
    else usage();
    return 0;
}
