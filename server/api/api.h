/* api.h: one handler per route; each resource lives in its own file
 * (health.c, shards.c, soup.c, events.c). Handlers get an authenticated,
 * parsed request and reply exactly once. */
#pragma once

#include "http/reply.h"
#include "http/request.h"

enum MHD_Result api_healthz(struct request *r);
enum MHD_Result api_readyz(struct request *r);
enum MHD_Result api_version(struct request *r);

enum MHD_Result api_shards_create(struct request *r);
enum MHD_Result api_shards_list(struct request *r);
enum MHD_Result api_shards_get(struct request *r);
enum MHD_Result api_shards_patch(struct request *r);
enum MHD_Result api_shards_withdraw(struct request *r);

enum MHD_Result api_soup_get(struct request *r);
enum MHD_Result api_soup_history(struct request *r);
enum MHD_Result api_soup_verify(struct request *r);
enum MHD_Result api_soup_export(struct request *r);

enum MHD_Result api_events_list(struct request *r);
enum MHD_Result api_events_verify(struct request *r);
/* proofs.c */
enum MHD_Result api_keys_list(struct request *r);
enum MHD_Result api_shard_receipts(struct request *r);

enum MHD_Result api_generate(struct request *r);
enum MHD_Result api_jobs_get(struct request *r);
enum MHD_Result api_jobs_cancel(struct request *r);

enum MHD_Result api_openai_images(struct request *r);
enum MHD_Result api_openai_models(struct request *r);
enum MHD_Result api_sdapi_txt2img(struct request *r);
enum MHD_Result api_sdapi_scripts(struct request *r);
enum MHD_Result api_sdapi_samplers(struct request *r);
enum MHD_Result api_sdapi_models(struct request *r);
enum MHD_Result api_sdapi_options(struct request *r);

enum MHD_Result api_stats(struct request *r);
enum MHD_Result api_metrics(struct request *r);
enum MHD_Result api_dashboard(struct request *r);
