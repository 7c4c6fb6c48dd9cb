/* main.c: config -> registry -> base model -> engine -> HTTP -> wait -> drain. */
#include <stdio.h>

int main(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "soupd: not yet\n");
  return 1;
}
