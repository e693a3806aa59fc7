#pragma once

#include <string>
#include <string_view>

namespace amlnode {

// Bytes as lower-case hex, and back ("" for text that is not hex).
std::string hex_encode(std::string_view bytes);
std::string hex_decode(std::string_view hex);

// `bytes` bytes from the kernel's CSPRNG (getrandom), in hex; "" when it cannot give them.
std::string random_hex(std::size_t bytes);

// Lower-case hex SHA-256 of `data` (nettle).
std::string sha256_hex(std::string_view data);

}  // namespace amlnode
