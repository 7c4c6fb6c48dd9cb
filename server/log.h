/* log.h: one line per event on stderr:
 *   2026-11-25T19:01:02.123Z INFO  [req=7f3a...] message
 * The request id is thread-local: the HTTP layer sets it for the duration of
 * a request (log_set_request_id), so every line a handler logs carries it. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level lvl);
/* "debug", "info", "warn", "error"; returns -1 if unknown. */
int log_level_parse(const char *s);
void log_set_request_id(const char *id); /* NULL clears */
const char *log_request_id(void);
/* Now in RFC 3339 UTC with milliseconds ("2026-12-03T13:45:00.123Z"). */
void log_time_now(char *out, size_t len);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
