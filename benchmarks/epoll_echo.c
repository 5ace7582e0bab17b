/* epoll_echo.c: the C row of `python -m benchmarks`, the physical limit.
 *
 * A single-threaded, level-triggered epoll echo server on 127.0.0.1, the way
 * one writes it in C: non-blocking sockets, one shared read buffer, and per
 * read one write of every complete line (the partial tail waits for the next
 * read). Output the kernel does not take is kept, and reading from that
 * connection pauses until it has gone (backpressure). Nothing per connection
 * but a small struct, plus a buffer only while a partial line or unsent
 * output exists.
 *
 *   epoll_echo                 line echo (what every row of the tables runs)
 *   epoll_echo --bulk          byte echo: every byte back as it arrives
 *   epoll_echo --tls CERT KEY  line echo over TLS (OpenSSL; built with -DWITH_TLS)
 *
 * It prints "PORT <n>" once listening (the port the OS picked) and serves
 * until killed. benchmarks/native.py compiles it (cc -O2) on first use.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define READ_SIZE 262144  /* as asyncio's transports */
#define MAX_LINE 65536
#define BACKLOG 4096
#define MAX_EVENTS 256

struct conn {
    int fd;
    int writing;   /* EPOLLOUT registered (and reading paused) */
    char *tail;    /* a partial line carried to the next read */
    size_t tail_len;
    char *out;     /* output the kernel has not taken yet */
    size_t out_len, out_off;
#ifdef WITH_TLS
    SSL *ssl;
    int handshaking;
#endif
};

static int bulk;               /* --bulk: echo bytes, not lines */
static int epfd;
static struct conn **conns;    /* by file descriptor */
static size_t nconns;
static char rbuf[MAX_LINE + READ_SIZE];
#ifdef WITH_TLS
static SSL_CTX *tls_ctx;
#endif

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void watch(struct conn *c, unsigned events, int op) {
    struct epoll_event ev = {.events = events, .data.fd = c->fd};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void drop(struct conn *c) {
    conns[c->fd] = NULL;
#ifdef WITH_TLS
    if (c->ssl) SSL_free(c->ssl);
#endif
    close(c->fd);  /* also leaves the epoll set */
    free(c->tail);
    free(c->out);
    free(c);
}

/* Bytes read into buf (> 0), 0 at end of stream or on an error, -1 if none now. */
static ssize_t io_read(struct conn *c, char *buf, size_t n) {
#ifdef WITH_TLS
    if (c->ssl) {
        int got = SSL_read(c->ssl, buf, (int)n);
        if (got > 0) return got;
        int err = SSL_get_error(c->ssl, got);
        return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? -1 : 0;
    }
#endif
    ssize_t got = read(c->fd, buf, n);
    if (got < 0) return errno == EAGAIN || errno == EINTR ? -1 : 0;
    return got;
}

/* Bytes the kernel took (>= 0), -1 on an error. */
static ssize_t io_write(struct conn *c, const char *buf, size_t n) {
#ifdef WITH_TLS
    if (c->ssl) {
        int put = SSL_write(c->ssl, buf, (int)n);
        if (put > 0) return put;
        int err = SSL_get_error(c->ssl, put);
        return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
#endif
    ssize_t put = write(c->fd, buf, n);
    if (put < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    return put;
}

/* Send buf; keep what the kernel does not take and pause reading. 0, or -1 on an error. */
static int send_out(struct conn *c, const char *buf, size_t n) {
    ssize_t put = io_write(c, buf, n);
    if (put < 0) return -1;
    if ((size_t)put == n) return 0;
    /* OpenSSL wants the same bytes again: keep them all (partial writes are off). */
    c->out_len = n - (size_t)put;
    c->out_off = 0;
    c->out = malloc(c->out_len);
    if (!c->out) die("malloc");
    memcpy(c->out, buf + put, c->out_len);
    c->writing = 1;
    watch(c, EPOLLOUT, EPOLL_CTL_MOD);
    return 0;
}

static int flush_out(struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t put = io_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (put < 0) return -1;
        if (put == 0) return 0;
        c->out_off += (size_t)put;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    c->writing = 0;
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
    return 0;
}

/* Echo what one read brought: every complete line (or, with --bulk, every byte). */
static int echo(struct conn *c, size_t len) {
    if (bulk) return send_out(c, rbuf, len);
    char *end = memrchr(rbuf, '\n', len);
    size_t lines = end ? (size_t)(end - rbuf) + 1 : 0;
    size_t rest = len - lines;
    if (rest > MAX_LINE) return -1;
    if (rest != c->tail_len) {
        free(c->tail);
        c->tail = rest ? malloc(rest) : NULL;
        if (rest && !c->tail) die("malloc");
    }
    if (rest) memcpy(c->tail, rbuf + lines, rest);
    c->tail_len = rest;
    return lines ? send_out(c, rbuf, lines) : 0;
}

/* Read what is ready (TLS: every buffered record) and echo it. */
static int on_readable(struct conn *c) {
    for (int round = 0; round < 16 && !c->writing; round++) {
        if (c->tail_len) memcpy(rbuf, c->tail, c->tail_len);
        ssize_t got = io_read(c, rbuf + c->tail_len, READ_SIZE);
        if (got == 0) return -1;
        if (got < 0) return 0;
        if (echo(c, c->tail_len + (size_t)got) < 0) return -1;
#ifdef WITH_TLS
        if (c->ssl && SSL_has_pending(c->ssl)) continue;  /* epoll cannot see it */
#endif
        break;
    }
    return 0;
}

#ifdef WITH_TLS
static int handshake(struct conn *c) {
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshaking = 0;
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        return on_readable(c);
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) watch(c, EPOLLIN, EPOLL_CTL_MOD);
    else if (err == SSL_ERROR_WANT_WRITE) watch(c, EPOLLOUT, EPOLL_CTL_MOD);
    else return -1;
    return 0;
}
#endif

static void on_event(struct conn *c, unsigned events) {
    int failed = 0;
#ifdef WITH_TLS
    if (c->handshaking) {
        if (handshake(c) < 0) drop(c);
        return;
    }
#endif
    if (c->writing && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) failed = flush_out(c) < 0;
    else if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) failed = on_readable(c) < 0;
    if (failed) drop(c);
}

static void track(int fd) {
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 1024;
        while (n <= (size_t)fd) n *= 2;
        conns = realloc(conns, n * sizeof *conns);
        if (!conns) die("realloc");
        memset(conns + nconns, 0, (n - nconns) * sizeof *conns);
        nconns = n;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) die("calloc");
    c->fd = fd;
    conns[fd] = c;
#ifdef WITH_TLS
    if (tls_ctx) {
        c->ssl = SSL_new(tls_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) die("SSL_new");
        SSL_set_accept_state(c->ssl);
        c->handshaking = 1;
    }
#endif
    watch(c, EPOLLIN, EPOLL_CTL_ADD);
}

static void on_accept(int lfd) {
    for (int i = 0; i < 64; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != ECONNABORTED && errno != EINTR) perror("accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        track(fd);
    }
}

static int listen_any(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, len) < 0) die("bind");
    if (listen(fd, BACKLOG) < 0) die("listen");
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) die("getsockname");
    printf("PORT %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

static void setup_tls(const char *cert, const char *key) {
#ifdef WITH_TLS
    tls_ctx = SSL_CTX_new(TLS_server_method());
    if (!tls_ctx || SSL_CTX_use_certificate_chain_file(tls_ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(tls_ctx, key, SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#else
    (void)cert;
    (void)key;
    fprintf(stderr, "epoll_echo: built without TLS (no OpenSSL headers)\n");
    exit(2);
#endif
}

static void raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--bulk")) bulk = 1;
        else if (!strcmp(argv[i], "--tls") && i + 2 < argc) {
            setup_tls(argv[i + 1], argv[i + 2]);
            i += 2;
        } else {
            fprintf(stderr, "usage: epoll_echo [--bulk] [--tls CERT KEY]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) die("epoll_create1");
    int lfd = listen_any();
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) on_accept(lfd);
            else if ((size_t)fd < nconns && conns[fd]) on_event(conns[fd], events[i].events);
        }
    }
}
