/* health.c: liveness, readiness and version (no token needed). */
#include <stdatomic.h>

#include "api.h"
#include "core/app.h"
#include "core/reads.h"
#include "kernels/backends.h"
#include "version.h"

enum MHD_Result api_healthz(struct request *r) {
  return reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

enum MHD_Result api_readyz(struct request *r) {
  if (!atomic_load(&r->app->ready) || atomic_load(&r->app->stopping))
    return reply_problemf(r, 503, "not ready: %s",
                          atomic_load(&r->app->stopping) ? "shutting down"
                                                         : "the soup is not materialized yet");
  if (!core_registry_healthy(r->app))
    return reply_problemf(r, 503, "not ready: the registry hit an I/O error; restart soupd");
  return reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

enum MHD_Result api_version(struct request *r) {
  return reply_json(r, 200,
                    json_pack("{s:s,s:s}", "version", SOUPD_VERSION, "backends", backends_built()));
}
