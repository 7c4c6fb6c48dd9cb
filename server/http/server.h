/* server.h: the libmicrohttpd daemon: an internal thread pool over epoll,
 * with connection, per-IP, timeout and per-connection memory limits from the
 * config. Requests are parsed, authenticated and bounded here before any
 * handler runs. */
#pragma once

struct app;
struct http_server;

int http_start(struct app *app, struct http_server **out, char **err);
/* Stops accepting new connections. */
void http_quiesce(struct http_server *s);
/* Stops accepting, then stops the daemon (waits for in-flight handlers).
 * Every deferred job must have ended first (engine_stop). */
void http_stop(struct http_server *s);
