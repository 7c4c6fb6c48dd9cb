/* api_gen.h: submitting a generation from any of the generation endpoints
 * (/generate, OpenAI, A1111), each with its own response shape. */
#pragma once

#include "core/generation.h"
#include "http/request.h"

typedef json_t *(*api_gen_shape)(struct request *r, const struct gen_output *o);

struct api_gen_ctx {
  int want_png;
  api_gen_shape shape; /* NULL: the /generate JSON */
};

/* Queues g (moved into the job): async -> 202 with a listed job; otherwise
 * the connection waits and the reply is the PNG, shape(o), or the /generate
 * JSON. */
enum MHD_Result api_gen_submit(struct request *r, struct gen_request *g, api_gen_shape shape);
