/* tokenizer.c: the CLIP BPE tokenizer (vocabulary, special tokens, BPE,
 * framing, the `soupd tokenize` entry point).
 *
 * Reference: diffusers' pipeline loads CLIPTokenizer, which in transformers
 * 5.24 is the `tokenizers`-backed class (there is no slow Python CLIP
 * tokenizer any more). ftfy is NOT used, even when installed, and there is
 * no html.unescape and no strip: the normalizer is NFC, \s+ -> " ",
 * Lowercase (tokenizer_text.c). Encoding, in order:
 *  1. special ("added") tokens whose `normalized` flag is false are cut out
 *     of the raw text (leftmost-longest match, case-sensitive);
 *  2. every remaining segment is normalized, and the special tokens whose
 *     flag is true are cut out of the normalized text;
 *  3. the rest is pre-tokenized (tokenizer_text.c), each piece's UTF-8 bytes
 *     mapped through bytes_to_unicode, then BPE with "</w>" appended to the
 *     last symbol; symbols missing from the vocabulary become unk;
 *  4. BOS + the first 75 ids + EOS, padded to 77 with the pad id.
 * The flags follow what transformers 5.24 ends up with (checked
 * empirically): tokenizer_config.json values overridden per key by
 * special_tokens_map.json; a token given as a plain string has normalized =
 * false, as an object its "normalized" field (default true); defaults are
 * bos "<|startoftext|>", eos/unk/pad "<|endoftext|>" (strings). A content
 * that is the unk or pad token is normalized only if all of those entries
 * say so; otherwise the last of bos/eos with that content decides. With SD2
 * (pad "!") every "!" in a prompt therefore becomes id 0 on its own.
 * BPE merges the lowest-ranked adjacent pair first (leftmost on ties), one
 * at a time, like tokenizers' BPE. Ranks are merges.txt line numbers,
 * "#version" lines skipped.
 *
 * Thread safety: everything is read-only after load except the word cache
 * (direct-mapped, TOK_CACHE_SLOTS entries, one mutex).
 */
#include "tokenizer.h"
#include "formats/json_file.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer_impl.h"

#define TOK_MAX_CONTENT (TOKENIZER_MAX_LEN - 2)
#define TOK_CACHE_SLOTS 4096
#define TOK_CACHE_WORD 64 /* longer words are not cached */
#define TOK_MAX_SPECIAL 4

struct vocab_entry {
  const char *s; /* NULL = empty slot */
  int32_t id;
};
struct merge_entry {
  uint64_t key; /* (a << 32 | b) + 1, 0 = empty slot */
  int32_t rank, id;
};
struct special {
  char *content;
  uint32_t *cps; /* content as code points */
  size_t n_cps;
  int32_t id;
  int normalized;
};
struct cache_slot {
  uint32_t hash;
  uint8_t len, n_ids; /* len == 0: empty */
  char word[TOK_CACHE_WORD];
  int32_t ids[TOK_CACHE_WORD];
};

struct tokenizer {
  char *strings; /* arena for vocab strings */
  struct vocab_entry *vocab;
  size_t vocab_cap; /* power of two */
  struct merge_entry *merges;
  size_t merges_cap;
  int32_t byte_id[256], byte_end_id[256]; /* bytes_to_unicode(b) [+ "</w>"] */
  int32_t bos, eos, pad, unk;
  struct special specials[TOK_MAX_SPECIAL];
  int n_special;
  pthread_mutex_t cache_lock;
  struct cache_slot *cache;
};

static char *fmt_err(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) s = NULL;
  va_end(ap);
  return s;
}

static uint32_t hash_bytes(const char *s, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static int32_t vocab_find(const struct tokenizer *t, const char *s, size_t n) {
  size_t mask = t->vocab_cap - 1;
  for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
    const struct vocab_entry *e = &t->vocab[i];
    if (!e->s) return -1;
    if (strncmp(e->s, s, n) == 0 && e->s[n] == 0) return e->id;
  }
}

static const struct merge_entry *merge_find(const struct tokenizer *t, int32_t a, int32_t b) {
  uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
  size_t mask = t->merges_cap - 1;
  for (size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;; i = (i + 1) & mask) {
    const struct merge_entry *e = &t->merges[i];
    if (e->key == 0) return NULL;
    if (e->key == key) return e;
  }
}

/* ---- loading ---- */

/* The vocabulary from a JSON object {token: id}; what names its file. */
static int load_vocab_obj(struct tokenizer *t, json_t *root, const char *what, char **err) {
  if (!json_is_object(root)) {
    *err = fmt_err("%s: the vocabulary is not a JSON object", what);
    return -EINVAL;
  }
  size_t n = json_object_size(root), bytes = 0;
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) bytes += strlen(k) + 1;
  t->vocab_cap = 1;
  while (t->vocab_cap < 2 * n + 2) t->vocab_cap <<= 1;
  t->vocab = calloc(t->vocab_cap, sizeof *t->vocab);
  t->strings = malloc(bytes + 1);
  if (!t->vocab || !t->strings) {
    *err = fmt_err("out of memory");
    return -ENOMEM;
  }
  char *p = t->strings;
  int rc = 0;
  json_object_foreach(root, k, v) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
      *err = fmt_err("%s: id of \"%s\" is not a non-negative integer", what, k);
      rc = -EINVAL;
      break;
    }
    size_t len = strlen(k);
    memcpy(p, k, len + 1);
    size_t mask = t->vocab_cap - 1, i = hash_bytes(k, len) & mask;
    while (t->vocab[i].s) i = (i + 1) & mask; /* keys of a JSON object are unique */
    t->vocab[i].s = p;
    t->vocab[i].id = (int32_t)json_integer_value(v);
    p += len + 1;
  }
  return rc;
}

static int load_vocab(struct tokenizer *t, const char *path, char **err) {
  json_error_t je;
  json_t *root = json_file_load(path, 0, &je);
  if (!root) {
    *err = fmt_err("tokenizer/vocab.json: %s", je.text);
    return -EINVAL;
  }
  int rc = load_vocab_obj(t, root, "tokenizer/vocab.json", err);
  json_decref(root);
  return rc;
}

/* Merges, one "a b" a line (a "#version" line skipped), ranked in order;
 * closes f. */
static int load_merges_fp(struct tokenizer *t, FILE *f, const char *what, char **err) {
  char *line = NULL;
  size_t cap = 0, count = 0, lineno = 0;
  ssize_t len;
  int rc = 0;
  /* First pass: count lines for the table size. */
  while ((len = getline(&line, &cap, f)) >= 0) count++;
  t->merges_cap = 1;
  while (t->merges_cap < 2 * count + 2) t->merges_cap <<= 1;
  t->merges = calloc(t->merges_cap, sizeof *t->merges);
  if (!t->merges) {
    rc = -ENOMEM;
    *err = fmt_err("out of memory");
    goto cleanup;
  }
  rewind(f);
  int32_t rank = 0;
  while ((len = getline(&line, &cap, f)) >= 0) {
    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
    if (strncmp(line, "#version", 8) == 0) continue;
    char *sp = strchr(line, ' ');
    if (!sp || sp == line || sp[1] == 0 || strchr(sp + 1, ' ')) {
      rc = -EINVAL;
      *err = fmt_err("%s: merge %zu is not \"a b\"", what, lineno);
      goto cleanup;
    }
    *sp = 0;
    const char *a = line, *b = sp + 1;
    size_t la = strlen(a), lb = strlen(b);
    int32_t ia = vocab_find(t, a, la), ib = vocab_find(t, b, lb);
    *sp = ' ';
    memmove(sp, sp + 1, lb + 1); /* "ab" */
    int32_t iab = vocab_find(t, line, la + lb);
    if (ia < 0 || ib < 0 || iab < 0) {
      rc = -EINVAL;
      *err = fmt_err("%s: merge %zu uses a token missing from the vocabulary", what, lineno);
      goto cleanup;
    }
    uint64_t key = (((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib) + 1;
    size_t mask = t->merges_cap - 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
    while (t->merges[i].key && t->merges[i].key != key) i = (i + 1) & mask;
    /* A repeated pair: the later line wins (as a map built in file order). */
    t->merges[i] = (struct merge_entry){key, rank, iab};
    rank++;
  }
cleanup:
  free(line);
  fclose(f);
  return rc;
}

static int load_merges(struct tokenizer *t, const char *path, char **err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    *err = fmt_err("tokenizer/merges.txt: cannot open");
    return -ENOENT;
  }
  return load_merges_fp(t, f, "tokenizer/merges.txt", err);
}

/* transformers 5 saves a CLIP tokenizer as tokenizer/tokenizer.json alone:
 * {"model": {"type": "BPE", "vocab": {...}, "merges": ["a b" | ["a", "b"], ...]}}. */
static int load_tokenizer_json(struct tokenizer *t, const char *path, char **err) {
  static const char *what = "tokenizer/tokenizer.json";
  json_error_t je;
  json_t *root = json_file_load(path, 0, &je);
  if (!root) {
    *err = fmt_err("%s: %s", what, je.text);
    return -EINVAL;
  }
  json_t *model = json_object_get(root, "model");
  json_t *type = json_object_get(model, "type"), *merges = json_object_get(model, "merges");
  int rc = -EINVAL;
  char *buf = NULL;
  size_t len = 0;
  FILE *mem = NULL;
  if (!json_is_object(model) || !json_is_string(type) || strcmp(json_string_value(type), "BPE")) {
    *err = fmt_err("%s: model.type is not \"BPE\" (a CLIP tokenizer is BPE)", what);
    goto out;
  }
  if ((rc = load_vocab_obj(t, json_object_get(model, "vocab"), what, err))) goto out;
  rc = -EINVAL;
  if (!json_is_array(merges)) {
    *err = fmt_err("%s: model.merges is not a list", what);
    goto out;
  }
  mem = open_memstream(&buf, &len);
  if (!mem) {
    rc = -ENOMEM;
    *err = fmt_err("out of memory");
    goto out;
  }
  size_t i;
  json_t *m;
  json_array_foreach(merges, i, m) {
    const char *a = json_string_value(json_array_get(m, 0));
    const char *b = json_string_value(json_array_get(m, 1));
    if (json_is_string(m)) /* "a b" (tokenizers before 0.20) */
      fprintf(mem, "%s\n", json_string_value(m));
    else if (json_is_array(m) && json_array_size(m) == 2 && a && b)
      fprintf(mem, "%s %s\n", a, b);
    else {
      fclose(mem);
      *err = fmt_err("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", what, i + 1);
      goto out;
    }
  }
  if (fclose(mem) != 0) {
    rc = -ENOMEM;
    *err = fmt_err("out of memory");
    goto out;
  }
  FILE *f = fmemopen(buf, len, "rb");
  if (!f) {
    rc = -ENOMEM;
    *err = fmt_err("out of memory");
    goto out;
  }
  rc = load_merges_fp(t, f, what, err);
out:
  free(buf);
  json_decref(root);
  return rc;
}

static int file_exists(const char *dir, const char *name) {
  char *p = fmt_err("%s/%s", dir, name);
  int ok = p && access(p, F_OK) == 0;
  free(p);
  return ok;
}

/* A special-token entry of the JSON files: a string, or an object with
 * "content" (and "normalized"). */
struct tok_spec {
  const char *content;
  int normalized;
};

static int spec_from_json(json_t *v, struct tok_spec *s) {
  if (json_is_string(v)) {
    s->content = json_string_value(v);
    s->normalized = 0;
    return 1;
  }
  json_t *c = json_is_object(v) ? json_object_get(v, "content") : NULL;
  if (!json_is_string(c)) return 0;
  s->content = json_string_value(c);
  json_t *nz = json_object_get(v, "normalized");
  s->normalized = nz ? json_is_true(nz) : 1;
  return 1;
}

static json_t *load_json_opt(const char *dir, const char *name) {
  char *path = fmt_err("%s/%s", dir, name);
  if (!path) return NULL;
  json_t *j = json_file_load(path, 0, NULL);
  free(path);
  if (j && !json_is_object(j)) {
    json_decref(j);
    j = NULL;
  }
  return j;
}

static int add_special(struct tokenizer *t, const char *content, int normalized, char **err) {
  for (int i = 0; i < t->n_special; i++)
    if (strcmp(t->specials[i].content, content) == 0) return 0;
  if (t->n_special == TOK_MAX_SPECIAL || !*content) return 0;
  int32_t id = vocab_find(t, content, strlen(content));
  if (id < 0) {
    *err = fmt_err("tokenizer: special token \"%s\" is not in vocab.json", content);
    return -EINVAL;
  }
  struct special *s = &t->specials[t->n_special];
  s->content = strdup(content);
  if (!s->content) return -ENOMEM;
  if (tok_utf8_decode(content, strlen(content), &s->cps, &s->n_cps)) {
    free(s->content);
    *err = fmt_err("tokenizer: special token is not valid UTF-8");
    return -EINVAL;
  }
  s->id = id;
  s->normalized = normalized;
  t->n_special++;
  return 0;
}

static int load_specials(struct tokenizer *t, const char *dir, char **err) {
  enum { BOS, EOS, UNK, PAD, NKEYS };
  static const char *const keys[NKEYS] = {"bos_token", "eos_token", "unk_token", "pad_token"};
  struct tok_spec spec[NKEYS] = {
      {"<|startoftext|>", 0}, {"<|endoftext|>", 0}, {"<|endoftext|>", 0}, {"<|endoftext|>", 0}};
  json_t *cfg = load_json_opt(dir, "tokenizer_config.json");
  json_t *map = load_json_opt(dir, "special_tokens_map.json");
  int rc = 0;
  for (int k = 0; k < NKEYS; k++) {
    if (cfg) spec_from_json(json_object_get(cfg, keys[k]), &spec[k]);
    if (map) spec_from_json(json_object_get(map, keys[k]), &spec[k]);
  }
  int32_t *ids[NKEYS] = {&t->bos, &t->eos, &t->unk, &t->pad};
  for (int k = 0; k < NKEYS; k++) {
    *ids[k] = vocab_find(t, spec[k].content, strlen(spec[k].content));
    if (*ids[k] < 0) {
      *err = fmt_err("tokenizer: %s \"%s\" is not in vocab.json", keys[k], spec[k].content);
      rc = -EINVAL;
      goto cleanup;
    }
  }
  /* The normalized flag per content (see the header comment). */
  for (int k = 0; k < NKEYS && rc == 0; k++) {
    const char *c = spec[k].content;
    int is_unk_pad = 0, norm = 1;
    for (int j = UNK; j <= PAD; j++)
      if (strcmp(spec[j].content, c) == 0) is_unk_pad = 1, norm &= spec[j].normalized;
    if (!is_unk_pad)
      for (int j = BOS; j <= EOS; j++)
        if (strcmp(spec[j].content, c) == 0) norm = spec[j].normalized;
    rc = add_special(t, c, norm, err);
  }
cleanup:
  json_decref(cfg);
  json_decref(map);
  return rc;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the other 68
 * to U+0100.. in ascending byte order. */
static uint32_t byte_to_unicode(int b) {
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
  int n = 0;
  for (int x = 0; x < b; x++)
    if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
  return 256u + (uint32_t)n;
}

/* When a folder holds both forms (vocab.json + merges.txt, and
 * tokenizer.json), they must say the same thing: t was loaded from the
 * first, j from the second. Returns 0, or -EINVAL with *err naming the
 * first difference. */
static int forms_agree(const struct tokenizer *t, const struct tokenizer *j, char **err) {
  static const char *both = "tokenizer: vocab.json/merges.txt and tokenizer.json disagree";
  size_t nt = 0, nj = 0;
  for (size_t i = 0; i < t->vocab_cap; i++) nt += t->vocab[i].s != NULL;
  for (size_t i = 0; i < j->vocab_cap; i++) nj += j->vocab[i].s != NULL;
  if (nt != nj) {
    *err = fmt_err("%s: %zu tokens against %zu", both, nt, nj);
    return -EINVAL;
  }
  for (size_t i = 0; i < j->vocab_cap; i++) {
    const struct vocab_entry *e = &j->vocab[i];
    if (!e->s) continue;
    int32_t id = vocab_find(t, e->s, strlen(e->s));
    if (id != e->id) {
      *err = fmt_err("%s: token \"%s\" is %d in vocab.json, %d in tokenizer.json", both, e->s,
                     (int)id, (int)e->id);
      return -EINVAL;
    }
  }
  nt = nj = 0;
  for (size_t i = 0; i < t->merges_cap; i++) nt += t->merges[i].key != 0;
  for (size_t i = 0; i < j->merges_cap; i++) nj += j->merges[i].key != 0;
  if (nt != nj) {
    *err = fmt_err("%s: %zu merges against %zu", both, nt, nj);
    return -EINVAL;
  }
  for (size_t i = 0; i < j->merges_cap; i++) {
    const struct merge_entry *e = &j->merges[i];
    if (!e->key) continue;
    uint64_t k = e->key - 1;
    const struct merge_entry *f = merge_find(t, (int32_t)(k >> 32), (int32_t)(uint32_t)k);
    if (!f || f->rank != e->rank) {
      *err = fmt_err("%s: merge %d of tokenizer.json is %s in merges.txt", both, (int)e->rank + 1,
                     f ? "at another line" : "missing");
      return -EINVAL;
    }
  }
  return 0;
}

/* Loads dir/tokenizer.json into a scratch tokenizer and checks it against t. */
static int check_tokenizer_json(const struct tokenizer *t, const char *dir, char **err) {
  struct tokenizer *j = calloc(1, sizeof *j);
  char *path = fmt_err("%s/tokenizer.json", dir);
  int rc = -ENOMEM;
  if (j && path) {
    pthread_mutex_init(&j->cache_lock, NULL);
    rc = load_tokenizer_json(j, path, err);
    if (rc == 0) rc = forms_agree(t, j, err);
  }
  free(path);
  if (j) tokenizer_free(j);
  return rc;
}

int tokenizer_load(const char *dir, struct tokenizer **out, char **err) {
  *out = NULL;
  *err = NULL;
  struct tokenizer *t = calloc(1, sizeof *t);
  char *path = NULL;
  int rc = -ENOMEM;
  if (!t) goto fail;
  pthread_mutex_init(&t->cache_lock, NULL);
  if (!file_exists(dir, "vocab.json") && file_exists(dir, "tokenizer.json")) {
    if (!(path = fmt_err("%s/tokenizer.json", dir))) goto fail;
    if ((rc = load_tokenizer_json(t, path, err))) goto fail;
  } else {
    if (!(path = fmt_err("%s/vocab.json", dir))) goto fail;
    if ((rc = load_vocab(t, path, err))) goto fail;
    free(path);
    if (!(path = fmt_err("%s/merges.txt", dir))) goto fail;
    if ((rc = load_merges(t, path, err))) goto fail;
    if (file_exists(dir, "tokenizer.json") && (rc = check_tokenizer_json(t, dir, err))) goto fail;
  }
  if ((rc = load_specials(t, dir, err))) goto fail;
  for (int b = 0; b < 256; b++) {
    char s[16];
    size_t n = tok_utf8_encode(byte_to_unicode(b), s);
    t->byte_id[b] = vocab_find(t, s, n);
    memcpy(s + n, "</w>", 5);
    t->byte_end_id[b] = vocab_find(t, s, n + 4);
    if (t->byte_id[b] < 0) t->byte_id[b] = t->unk;
    if (t->byte_end_id[b] < 0) t->byte_end_id[b] = t->unk;
  }
  rc = -ENOMEM;
  if (!(t->cache = calloc(TOK_CACHE_SLOTS, sizeof *t->cache))) goto fail;
  free(path);
  *out = t;
  return 0;
fail:
  if (!*err) *err = fmt_err("tokenizer: out of memory");
  free(path);
  tokenizer_free(t);
  return rc;
}

void tokenizer_free(struct tokenizer *t) {
  if (!t) return;
  for (int i = 0; i < t->n_special; i++) {
    free(t->specials[i].content);
    free(t->specials[i].cps);
  }
  free(t->strings);
  free(t->vocab);
  free(t->merges);
  free(t->cache);
  pthread_mutex_destroy(&t->cache_lock);
  free(t);
}

int32_t tokenizer_pad_id(const struct tokenizer *t) {
  return t->pad;
}
int32_t tokenizer_bos_id(const struct tokenizer *t) {
  return t->bos;
}
int32_t tokenizer_eos_id(const struct tokenizer *t) {
  return t->eos;
}

/* ---- BPE ---- */

/* A candidate merge of the symbols at pos and next[pos]. */
struct bpe_cand {
  int32_t rank, new_id;
  uint32_t pos;
  int32_t a, b; /* the pair when pushed (stale if it changed) */
};

static int cand_less(const struct bpe_cand *x, const struct bpe_cand *y) {
  return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(struct bpe_cand *h, size_t *n, struct bpe_cand c) {
  size_t i = (*n)++;
  while (i > 0 && cand_less(&c, &h[(i - 1) / 2])) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = c;
}

static struct bpe_cand heap_pop(struct bpe_cand *h, size_t *n) {
  struct bpe_cand top = h[0], last = h[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
    if (!cand_less(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (*n) h[i] = last;
  return top;
}

static void push_pair(const struct tokenizer *t, struct bpe_cand *h, size_t *nh, const int32_t *sym,
                      uint32_t pos, uint32_t next) {
  const struct merge_entry *m = merge_find(t, sym[pos], sym[next]);
  if (m) heap_push(h, nh, (struct bpe_cand){m->rank, m->id, pos, sym[pos], sym[next]});
}

/* BPE of one word (its UTF-8 bytes, not yet byte-mapped): the lowest-ranked
 * adjacent pair is merged first, leftmost on ties, one at a time (a heap of
 * candidates, stale ones skipped). work holds 4 * n uint32 + n cands.
 * Writes the ids to sym (room for n) and returns their number. */
static size_t bpe_word(const struct tokenizer *t, const unsigned char *w, size_t n, int32_t *sym,
                       uint32_t *links, struct bpe_cand *heap) {
  uint32_t *next = links, *prev = links + n, *alive = links + 2 * n;
  size_t nh = 0;
  for (size_t i = 0; i < n; i++) {
    sym[i] = i + 1 == n ? t->byte_end_id[w[i]] : t->byte_id[w[i]];
    next[i] = (uint32_t)i + 1;
    prev[i] = (uint32_t)i - 1;
    alive[i] = 1;
  }
  for (size_t i = 0; i + 1 < n; i++) push_pair(t, heap, &nh, sym, (uint32_t)i, (uint32_t)i + 1);
  while (nh) {
    struct bpe_cand c = heap_pop(heap, &nh);
    uint32_t p = c.pos, q = next[p];
    if (!alive[p] || q >= n || sym[p] != c.a || sym[q] != c.b) continue;
    sym[p] = c.new_id;
    alive[q] = 0;
    next[p] = next[q];
    if (next[q] < n) prev[next[q]] = p;
    if (p > 0 && prev[p] < n) push_pair(t, heap, &nh, sym, prev[p], p);
    if (next[p] < n) push_pair(t, heap, &nh, sym, p, next[p]);
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i = next[i]) sym[k++] = sym[i];
  return k;
}

/* Cached BPE of w (n bytes) into ids (room for n); work as bpe_word. */
static size_t bpe_cached(struct tokenizer *t, const char *w, size_t n, int32_t *ids,
                         uint32_t *links, struct bpe_cand *heap) {
  const unsigned char *u = (const unsigned char *)w;
  if (n >= TOK_CACHE_WORD) return bpe_word(t, u, n, ids, links, heap);
  uint32_t h = hash_bytes(w, n);
  struct cache_slot *s = &t->cache[h % TOK_CACHE_SLOTS];
  pthread_mutex_lock(&t->cache_lock);
  if (s->len == n && s->hash == h && memcmp(s->word, w, n) == 0) {
    size_t k = s->n_ids;
    memcpy(ids, s->ids, k * sizeof *ids);
    pthread_mutex_unlock(&t->cache_lock);
    return k;
  }
  pthread_mutex_unlock(&t->cache_lock);
  size_t k = bpe_word(t, u, n, ids, links, heap);
  pthread_mutex_lock(&t->cache_lock);
  s->hash = h;
  s->len = (uint8_t)n;
  s->n_ids = (uint8_t)k;
  memcpy(s->word, w, n);
  memcpy(s->ids, ids, k * sizeof *ids);
  pthread_mutex_unlock(&t->cache_lock);
  return k;
}

/* ---- encoding ---- */

struct enc_state {
  struct tokenizer *t;
  int32_t ids[TOK_MAX_CONTENT];
  int n;
  size_t cap; /* bytes the work buffers below hold */
  char *bytes;
  int32_t *sym;
  uint32_t *links;
  struct bpe_cand *heap;
};

/* Appends ids; returns 1 once the content is full (stop). */
static int emit(struct enc_state *st, const int32_t *ids, size_t k) {
  for (size_t i = 0; i < k && st->n < TOK_MAX_CONTENT; i++) st->ids[st->n++] = ids[i];
  return st->n >= TOK_MAX_CONTENT;
}

static void enc_state_free(struct enc_state *st) {
  free(st->bytes);
  free(st->sym);
  free(st->links);
  free(st->heap);
}

/* Work buffers for a word of up to nb bytes. */
static int enc_state_reserve(struct enc_state *st, size_t nb) {
  if (nb <= st->cap) return 0;
  size_t cap = nb < 256 ? 256 : nb;
  enc_state_free(st);
  st->bytes = malloc(cap + 4);
  st->sym = malloc(cap * sizeof *st->sym);
  st->links = malloc(3 * cap * sizeof *st->links);
  st->heap = malloc(2 * cap * sizeof *st->heap);
  st->cap = cap;
  if (st->bytes && st->sym && st->links && st->heap) return 0;
  st->cap = 0;
  return -ENOMEM;
}

static int on_piece(void *ctx, const uint32_t *cps, size_t n) {
  struct enc_state *st = ctx;
  if (enc_state_reserve(st, 4 * n)) return -ENOMEM;
  size_t nb = 0;
  for (size_t i = 0; i < n; i++) nb += tok_utf8_encode(cps[i], st->bytes + nb);
  size_t k = bpe_cached(st->t, st->bytes, nb, st->sym, st->links, st->heap);
  return emit(st, st->sym, k);
}

/* Leftmost-longest match of a special with the given flag at cps[i]. */
static const struct special *special_at(const struct tokenizer *t, const uint32_t *cps, size_t n,
                                        size_t i, int normalized) {
  const struct special *best = NULL;
  for (int s = 0; s < t->n_special; s++) {
    const struct special *sp = &t->specials[s];
    if (sp->normalized != normalized || (best && sp->n_cps <= best->n_cps)) continue;
    if (n - i >= sp->n_cps && memcmp(cps + i, sp->cps, sp->n_cps * sizeof *cps) == 0) best = sp;
  }
  return best;
}

/* Splits cps on specials with the given flag; text runs go to the next
 * stage (normalize + second split, or pre-tokenisation). */
static int encode_run(struct enc_state *st, const uint32_t *cps, size_t n, int stage);

static int encode_text(struct enc_state *st, const uint32_t *cps, size_t n, int stage) {
  if (stage == 0) {
    uint32_t *norm = NULL;
    size_t nn = 0;
    if (tok_normalize(cps, n, &norm, &nn)) return -ENOMEM;
    int rc = encode_run(st, norm, nn, 1);
    free(norm);
    return rc;
  }
  return tok_pretokenize(cps, n, on_piece, st);
}

static int encode_run(struct enc_state *st, const uint32_t *cps, size_t n, int stage) {
  size_t start = 0;
  for (size_t i = 0; i < n;) {
    const struct special *sp = special_at(st->t, cps, n, i, stage == 1);
    if (!sp) {
      i++;
      continue;
    }
    int rc = encode_text(st, cps + start, i - start, stage);
    if (rc) return rc;
    if ((rc = emit(st, &sp->id, 1))) return rc;
    i += sp->n_cps;
    start = i;
  }
  return encode_text(st, cps + start, n - start, stage);
}

int tokenizer_encode(struct tokenizer *t, const char *text, int32_t ids[TOKENIZER_MAX_LEN],
                     int *n_real, char **err) {
  return tokenizer_encode_n(t, text, strlen(text), ids, n_real, err);
}

int tokenizer_encode_n(struct tokenizer *t, const char *text, size_t len,
                       int32_t ids[TOKENIZER_MAX_LEN], int *n_real, char **err) {
  *err = NULL;
  struct enc_state st = {.t = t};
  uint32_t *cps = NULL;
  size_t n = 0;
  int rc = -ENOMEM;
  if (enc_state_reserve(&st, 256)) goto cleanup;
  if (tok_utf8_decode(text, len, &cps, &n)) {
    rc = -EINVAL;
    *err = fmt_err("prompt is not valid UTF-8");
    goto cleanup;
  }
  rc = encode_run(&st, cps, n, 0);
  if (rc < 0) goto cleanup;
  rc = 0;
  ids[0] = t->bos;
  memcpy(ids + 1, st.ids, (size_t)st.n * sizeof *ids);
  ids[st.n + 1] = t->eos;
  for (int i = st.n + 2; i < TOKENIZER_MAX_LEN; i++) ids[i] = t->pad;
  if (n_real) *n_real = st.n + 2;
cleanup:
  if (rc == -ENOMEM && !*err) *err = fmt_err("out of memory");
  free(cps);
  enc_state_free(&st);
  return rc;
}

int tokenizer_cli_print(const char *model_dir, const char *text, FILE *out, char **err) {
  struct tokenizer *t = NULL;
  char *dir = fmt_err("%s/tokenizer", model_dir);
  int32_t ids[TOKENIZER_MAX_LEN];
  int rc = -ENOMEM;
  *err = NULL;
  if (!dir) goto cleanup;
  if ((rc = tokenizer_load(dir, &t, err))) goto cleanup;
  if ((rc = tokenizer_encode(t, text, ids, NULL, err))) goto cleanup;
  for (int i = 0; i < TOKENIZER_MAX_LEN; i++) fprintf(out, i ? " %d" : "%d", ids[i]);
  fputc('\n', out);
  rc = ferror(out) ? -EIO : 0;
  if (rc) *err = fmt_err("cannot write the ids");
cleanup:
  if (rc == -ENOMEM && !*err) *err = fmt_err("out of memory");
  free(dir);
  tokenizer_free(t);
  return rc;
}
