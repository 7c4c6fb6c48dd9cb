/* await_watch.h: cancels a synchronous job when its client goes away.
 *
 * libmicrohttpd does not watch a suspended connection, so one thread
 * (started with the HTTP server) polls the sockets of the requests that
 * wait for a job with cancel_on_disconnect, and cancels the job of a client
 * that has hung up (engine_job_cancel: a queued job ends at once, a running
 * one at its next step). The worker never sees the request, only the job's
 * cancel flag. */
#pragma once

#include <stdint.h>

struct engine;
struct job;

int await_watch_start(char **err);
void await_watch_stop(void);
/* Watches the socket fd for job j of engine e until await_watch_remove.
 * Returns a watch id (> 0), or 0 when out of memory (the job then runs to
 * its end whatever the client does). */
uint64_t await_watch_add(int fd, struct engine *e, struct job *j);
/* Stops watching id (0: nothing); called before the connection resumes. */
void await_watch_remove(uint64_t id);
