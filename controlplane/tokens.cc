#include "controlplane/tokens.h"

#include <openssl/rand.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/hash.h"

namespace amlnode::controlplane {

std::string random_token(std::string_view prefix, std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  // A CSPRNG that cannot produce bytes is a broken invariant: no token is better than a weak one.
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) {
    std::fprintf(stderr, "amlnode-controlplane: the system random number generator failed\n");
    std::abort();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(prefix);
  for (unsigned char b : raw) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

std::string token_hash(std::string_view token) {
  return sha256_hex(token);
}

std::string node_token_for_key(std::string_view node_id, std::string_view registration_key) {
  std::string material = "amlnode node token";
  material.push_back('\0');
  material.append(node_id);
  material.push_back('\0');
  material.append(registration_key);
  return "amlnode_" + sha256_hex(material);
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

bool is_valid_name(std::string_view name, std::size_t max_length) {
  if (name.empty() || name.size() > max_length) return false;
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (unsigned char c : name) {
    if (!std::isalnum(c) && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace amlnode::controlplane
