/* log.c: timestamped, levelled, request-tagged lines on stderr. One fprintf
 * per line under a mutex, so lines from threads never interleave. */
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum log_level g_level = LOG_INFO;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local char t_req[40];

void log_set_level(enum log_level lvl) {
  g_level = lvl;
}

int log_level_parse(const char *s) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) return i;
  return -1;
}

void log_set_request_id(const char *id) {
  if (!id) {
    t_req[0] = 0;
    return;
  }
  snprintf(t_req, sizeof t_req, "%s", id);
}

const char *log_request_id(void) {
  return t_req;
}

void log_time_now(char *out, size_t len) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char b[32];
  strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, len, "%s.%03ldZ", b, ts.tv_nsec / 1000000);
}

void log_msg(enum log_level lvl, const char *fmt, ...) {
  static const char *tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
  if (lvl < g_level) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  char when[40];
  log_time_now(when, sizeof when);
  pthread_mutex_lock(&g_mu);
  if (t_req[0])
    fprintf(stderr, "%s %s [req=%s] %s\n", when, tags[lvl], t_req, msg);
  else
    fprintf(stderr, "%s %s %s\n", when, tags[lvl], msg);
  pthread_mutex_unlock(&g_mu);
}
