/* stats.c: GET /stats (what the dashboard shows), GET /metrics (Prometheus
 * text format, version 0.0.4) and GET / (the dashboard page). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "core/app.h"
#include "core/reads.h"
#include "version.h"

enum MHD_Result api_stats(struct request *r) {
  struct app *a = r->app;
  struct core_stats s;
  core_stats_get(a, &s);
  json_t *o = json_pack(
      "{s:s,s:{s:I,s:I},s:{s:I,s:s,s:I,s:I,s:f,s:s?},"
      "s:{s:I,s:I,s:I,s:f,s:f,s:f,s:f},s:{s:i,s:i,s:I,s:I,s:I,s:I},s:{s:I,s:I}}",
      "version", SOUPD_VERSION, "shards", "active", (json_int_t)s.active, "withdrawn",
      (json_int_t)s.withdrawn, "soup", "version", (json_int_t)s.soup.live_version, "hash", s.hash,
      "params", (json_int_t)s.soup.params, "bytes", (json_int_t)s.soup.bytes, "last_update_ms",
      s.times.last_update_ms, "updated_at", s.times.updated_at[0] ? s.times.updated_at : NULL,
      "generation", "requests", (json_int_t)s.gen.requests, "images", (json_int_t)s.gen.images,
      "failures", (json_int_t)s.gen.failures, "latency_p50_ms", s.gen.p50_ms, "latency_p90_ms",
      s.gen.p90_ms, "latency_p99_ms", s.gen.p99_ms, "mean_step_ms", s.gen.mean_step_ms, "queue",
      "depth", s.eng.queued, "running", s.eng.running, "max", (json_int_t)a->cfg.queue_max,
      "rejected", (json_int_t)s.eng.rejected, "cancelled", (json_int_t)s.eng.cancelled, "succeeded",
      (json_int_t)s.eng.succeeded, "memory", "rss_bytes", (json_int_t)s.rss, "soup_bytes",
      (json_int_t)s.soup.bytes);
  return reply_json(r, 200, o);
}

enum MHD_Result api_metrics(struct request *r) {
  struct app *a = r->app;
  struct core_stats s;
  core_stats_get(a, &s);
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return reply_problemf(r, 500, "out of memory");
#define G(name, help, type, fmt, val)                                                              \
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s " fmt "\n", name, help, name, type, name, val)
  G("soupd_shards_active", "Active shards in the soup.", "gauge", "%lld", (long long)s.active);
  G("soupd_shards_withdrawn", "Withdrawn shards.", "gauge", "%lld", (long long)s.withdrawn);
  G("soupd_soup_version", "Live soup version.", "gauge", "%llu",
    (unsigned long long)s.soup.live_version);
  G("soupd_soup_params", "Parameters in the soup UNet.", "gauge", "%lld", (long long)s.soup.params);
  G("soupd_soup_last_update_seconds", "Duration of the last soup update.", "gauge", "%.6f",
    s.times.last_update_ms / 1e3);
  G("soupd_queue_depth", "Jobs waiting for the compute worker.", "gauge", "%d", s.eng.queued);
  G("soupd_jobs_running", "Jobs running.", "gauge", "%d", s.eng.running);
  G("soupd_jobs_rejected_total", "Jobs refused because the queue was full.", "counter", "%lld",
    (long long)s.eng.rejected);
  G("soupd_generation_requests_total", "Generation requests that ran.", "counter", "%lld",
    (long long)s.gen.requests);
  G("soupd_generation_failures_total", "Generation requests that failed or were cancelled.",
    "counter", "%lld", (long long)s.gen.failures);
  G("soupd_images_total", "Images generated.", "counter", "%lld", (long long)s.gen.images);
  fprintf(f,
          "# HELP soupd_generation_latency_seconds Generation latency (last 1024).\n"
          "# TYPE soupd_generation_latency_seconds summary\n"
          "soupd_generation_latency_seconds{quantile=\"0.5\"} %.6f\n"
          "soupd_generation_latency_seconds{quantile=\"0.9\"} %.6f\n"
          "soupd_generation_latency_seconds{quantile=\"0.99\"} %.6f\n",
          s.gen.p50_ms / 1e3, s.gen.p90_ms / 1e3, s.gen.p99_ms / 1e3);
  G("soupd_resident_memory_bytes", "Resident memory of the process.", "gauge", "%lld", s.rss);
#undef G
  fclose(f);
  enum MHD_Result res = reply_bytes(r, 200, "text/plain; version=0.0.4", buf, len, NULL);
  free(buf);
  return res;
}

static const char DASHBOARD[] =
    "<!doctype html><html><head><meta charset=utf-8><title>soupd</title>"
    "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;"
    "text-align:left}code{font-size:12px}</style></head><body>"
    "<h1>soupd</h1><p>Token: <input id=t size=70 type=password> "
    "<button onclick=load()>Load</button></p>"
    "<h2>Soup</h2><div id=soup></div><h2>Shards</h2><div id=shards></div>"
    "<h2>Statistics</h2><pre id=stats></pre><h2>Audit log</h2><div id=events></div>"
    "<script>"
    "const $=id=>document.getElementById(id);$('t').value=localStorage.soupdToken||'';"
    "const esc=s=>String(s==null?'':s).replace(/[&<>\"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;',"
    "'\"':'&quot;'}[c]));"
    "async function get(p){const r=await fetch(p,{headers:{Authorization:'Bearer '+$('t').value}});"
    "if(!r.ok)throw new Error((await r.json()).detail);return r.json()}"
    "function table(rows,cols){return '<table><tr>'+cols.map(c=>'<th>'+c+'</th>').join('')+"
    "'</tr>'+rows.map(r=>'<tr>'+cols.map(c=>'<td>'+esc(typeof r[c]==='object'?"
    "JSON.stringify(r[c]):r[c])+'</td>').join('')+'</tr>').join('')+'</table>'}"
    "async function load(){localStorage.soupdToken=$('t').value;try{"
    "const s=await get('/soup');$('soup').innerHTML='<p>version '+s.version+', hash <code>'+"
    "esc(s.hash)+'</code>, '+s.params+' parameters, '+esc(s.dtype)+' on '+esc(s.device)+'</p>'+"
    "table(s.members,['id','name','weight','share']);"
    "$('shards').innerHTML=table((await get('/shards')).shards,['id','name','provider',"
    "'status','weight','sha256','created_at','withdrawn_at']);"
    "$('stats').textContent=JSON.stringify(await get('/stats'),null,2);"
    "$('events').innerHTML=table((await get('/events?limit=50')).events.reverse(),['id','at',"
    "'type','principal','shard_id','soup_version_after','outcome']);"
    "}catch(e){$('soup').textContent='error: '+e.message}}"
    "if($('t').value)load();</script></body></html>";

enum MHD_Result api_dashboard(struct request *r) {
  return reply_bytes(r, 200, "text/html; charset=utf-8", DASHBOARD, sizeof DASHBOARD - 1, NULL);
}
