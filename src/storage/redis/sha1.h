// SHA-1 of a text, as 40 lowercase hex digits: the name Redis gives a cached script (EVALSHA).
#pragma once

#include <string>
#include <string_view>

namespace sluice::redis {

std::string sha1_hex(std::string_view data);

}  // namespace sluice::redis
