#pragma once

// Secrets and identifiers: random tokens, their stored form, and names that are safe in paths.

#include <cstddef>
#include <string>
#include <string_view>

namespace amlnode::controlplane {

// `prefix` followed by `bytes` random bytes (OpenSSL's CSPRNG) in lower-case hex.
std::string random_token(std::string_view prefix, std::size_t bytes = 32);

// How a token is stored: its SHA-256, so a copy of the database opens nothing.
std::string token_hash(std::string_view token);

// The token of a node that registered with a registration key: derived from the key and the node
// id, so the server can hand the same token out again when the same key comes back without ever
// storing the token. The key is 128 bits or more of the node's own randomness, and only its hash
// is stored, so the token is as hard to guess as a random one.
std::string node_token_for_key(std::string_view node_id, std::string_view registration_key);

// Compares without an early exit, so the time taken says nothing about where they differ.
bool constant_time_equal(std::string_view a, std::string_view b);

// 1 to `max_length` characters of [A-Za-z0-9_-] starting with a letter or digit (Azure ML's rule
// for experiment names; compute names follow it too). Such names are safe in file names and URLs.
bool is_valid_name(std::string_view name, std::size_t max_length);

}  // namespace amlnode::controlplane
