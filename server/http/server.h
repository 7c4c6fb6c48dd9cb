/* server.h: the libmicrohttpd daemon: an internal thread pool over epoll,
 * with connection, per-IP, timeout and per-connection memory limits from the
 * config. Requests are parsed, authenticated and bounded here before any
 * handler runs. */
#pragma once

struct app;
struct http_server;

int http_start(struct app *app, struct http_server **out, char **err);
/* Stops accepting, then stops the daemon (waits for in-flight handlers). */
void http_stop(struct http_server *s);
