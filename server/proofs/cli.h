/* cli.h: the offline proof commands of the soupd binary (API.md):
 *   soupd key rotate --data-dir DIR
 *   soupd verify-receipt FILE [--key PUBKEY] [--keys KEYS_JSON] [--data-dir DIR]
 * Each returns the process exit status: 0 valid/done, 1 invalid or failed,
 * 2 bad usage. */
#pragma once

int proofs_cli_key(int argc, char **argv);
int proofs_cli_verify_receipt(int argc, char **argv);
