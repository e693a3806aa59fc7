#include "common/hash.h"

#include <nettle/sha2.h>

namespace amlnode {

// Nettle rather than OpenSSL: OpenSSL 3 loads its configuration and providers on the first digest,
// which costs more than everything else a short-lived `amlnode run` does before the job starts.
std::string sha256_hex(std::string_view data) {
  sha256_ctx context;
  sha256_init(&context);
  sha256_update(&context, data.size(), reinterpret_cast<const uint8_t*>(data.data()));
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&context, sizeof digest, digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(sizeof digest * 2);
  for (uint8_t byte : digest) {
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 0xf]);
  }
  return out;
}

}  // namespace amlnode
