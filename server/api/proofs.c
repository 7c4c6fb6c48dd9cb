/* proofs.c: GET /keys (the public signing keys, so anyone can check a proof
 * offline) and GET /shards/{id}/receipts (the signed receipts of a shard's
 * registration and withdrawal). */
#include "api.h"
#include "core/app.h"

enum MHD_Result api_keys_list(struct request *r) {
  return reply_json(r, 200, app_keys_json(r->app));
}

enum MHD_Result api_shard_receipts(struct request *r) {
  json_t *out = NULL;
  struct op_error e = {0};
  if (app_shard_receipts(r->app, r->path_id, &out, &e) != 0) return reply_op_error(r, &e);
  return reply_json(r, 200, out);
}
