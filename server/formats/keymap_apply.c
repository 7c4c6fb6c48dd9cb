/* keymap_apply.c: see keymap_apply.h. Invariant kept: f->tensors stays
 * sorted by name with unique names, so st_find keeps working. */
#include "keymap_apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keymap_ldm.h"

int st_is_ldm(const struct st_file *f) {
  size_t n = strlen(KEYMAP_LDM_UNET_PREFIX);
  for (size_t i = 0; i < f->n_tensors; i++)
    if (strncmp(f->tensors[i].name, KEYMAP_LDM_UNET_PREFIX, n) == 0) return 1;
  return 0;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

int st_apply_ldm_names(struct st_file *f, const json_t *unet_config, char **err) {
  struct keymap_ldm_unet km;
  if (keymap_ldm_unet_init(&km, unet_config, err) != 0) return -1;
  size_t kept = 0;
  for (size_t i = 0; i < f->n_tensors; i++) {
    char out[512];
    int rc = keymap_ldm_unet_to_diffusers(&km, f->tensors[i].name, out, sizeof out);
    if (rc < 0) {
      char buf[700];
      snprintf(buf, sizeof buf, "tensor '%.400s' has no diffusers name in this UNet layout",
               f->tensors[i].name);
      *err = strdup(buf);
      /* keep the view consistent for st_close: unprocessed entries move down */
      for (size_t j = i; j < f->n_tensors; j++) f->tensors[kept++] = f->tensors[j];
      f->n_tensors = kept;
      return -1;
    }
    if (rc == 0) { /* another model's tensor */
      free(f->tensors[i].name);
      continue;
    }
    char *name = strdup(out);
    if (!name) return -1;
    free(f->tensors[i].name);
    f->tensors[kept] = f->tensors[i];
    f->tensors[kept++].name = name;
  }
  f->n_tensors = kept;
  qsort(f->tensors, kept, sizeof *f->tensors, cmp_name);
  for (size_t i = 1; i < kept; i++)
    if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
      char buf[400];
      snprintf(buf, sizeof buf, "two LDM keys map to '%.300s'", f->tensors[i].name);
      *err = strdup(buf);
      return -1;
    }
  return 0;
}
