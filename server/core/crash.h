/* crash.h: named crash points for the crash-recovery tests (reliability.md
 * item 4, after SQLite's crash tests). When the environment variable
 * SOUPD_CRASH_AT names a point, the process kills itself with SIGKILL there,
 * exactly like a power cut or kill -9 at that instant. Unset, it costs one
 * string compare. Points: register.stored, register.applied,
 * register.committed, withdraw.applied, withdraw.committed. */
#pragma once

void crash_point(const char *name);
