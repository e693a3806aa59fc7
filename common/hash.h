#pragma once

#include <string>
#include <string_view>

namespace amlnode {

// Lower-case hex SHA-256 of `data` (nettle).
std::string sha256_hex(std::string_view data);

}  // namespace amlnode
