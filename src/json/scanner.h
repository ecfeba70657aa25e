// A strict scanner for the fast JSON paths (src/json/json.cc's request bodies, Envoy's proto3
// JSON in src/server/envoy_json.cc): it reads only what it is certain the slow path (nlohmann's
// parser, protobuf's) reads the same way, and says false on anything else, so that the caller
// hands the whole text to the slow path, which decides and words the error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::json_text {

// utf8_tail() tells how many continuation bytes follow the lead byte `lead` of a well-formed
// UTF-8 sequence (0 for an invalid lead) and the range of the first one (the later ones are
// 0x80..0xBF): Unicode's table of well-formed byte sequences, which rejects overlong forms,
// surrogates and code points past U+10FFFF, as nlohmann's decoder and protobuf's check do.
inline int utf8_tail(unsigned char lead, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) return 1;
  if (lead == 0xE0) lo = 0xA0;
  if (lead == 0xED) hi = 0x9F;
  if (lead >= 0xE0 && lead <= 0xEF) return 2;
  if (lead == 0xF0) lo = 0x90;
  if (lead == 0xF4) hi = 0x8F;
  if (lead >= 0xF0 && lead <= 0xF4) return 3;
  return 0;
}

// Scanner holds the position in the text; readers derive from it.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

 protected:
  // at_end() skips trailing whitespace and tells whether the text is all read.
  bool at_end() {
    skip_space();
    return p_ == end_;
  }

  // once() marks a field as read; false when it was already (the slow paths decide then: the
  // DOM keeps the last one, protobuf merges).
  static bool once(unsigned& seen, unsigned bit) {
    if ((seen & bit) != 0) return false;
    seen |= bit;
    return true;
  }

  // skip_space() skips JSON's whitespace (what nlohmann's lexer skips; protobuf also skips \v
  // and \f, which therefore fall back).
  void skip_space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t'))
      ++p_;
  }

  bool take(char c) {
    skip_space();
    if (p_ == end_ || *p_ != c) return false;
    ++p_;
    return true;
  }

  // object() reads {"key": value, ...}, the key printable ASCII without escapes; `member(key)`
  // reads each value.
  template <typename Member>
  bool object(Member&& member) {
    return members([this, &member] {
      std::string_view key;
      return plain(key) && take(':') && member(key);
    });
  }

  // members() reads {member, ...}; `each()` reads one whole "key": value pair.
  template <typename Each>
  bool members(Each&& each) {
    if (!take('{')) return false;
    skip_space();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (!each()) return false;
      skip_space();
      if (p_ == end_) return false;
      const char c = *p_++;
      if (c == '}') return true;
      if (c != ',') return false;
    }
  }

  // plain() reads a string of printable ASCII without escapes (a key, an enum name).
  bool plain(std::string_view& out) {
    if (!take('"')) return false;
    const char* start = p_;
    while (p_ != end_ && *p_ != '"') {
      const auto c = static_cast<unsigned char>(*p_);
      if (c < 0x20 || c >= 0x80 || c == '\\') return false;
      ++p_;
    }
    if (p_ == end_) return false;
    out = std::string_view(start, static_cast<std::size_t>(p_ - start));
    ++p_;
    return true;
  }

  template <typename Element>
  bool array(Element&& element) {
    if (!take('[')) return false;
    skip_space();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      if (!element()) return false;
      skip_space();
      if (p_ == end_) return false;
      const char c = *p_++;
      if (c == ']') return true;
      if (c != ',') return false;
    }
  }

  // quoted() reads a string: valid UTF-8 and the two-character escapes; no \u escapes, no raw
  // control characters.
  bool quoted(std::string& out) {
    if (!take('"')) return false;
    out.clear();
    for (;;) {
      const char* run = p_;
      while (p_ != end_) {
        const auto c = static_cast<unsigned char>(*p_);
        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
        ++p_;
      }
      out.append(run, static_cast<std::size_t>(p_ - run));
      if (p_ == end_) return false;
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c == '\\') {
        if (++p_ == end_) return false;
        switch (*p_++) {
          case '"':
            out += '"';
            break;
          case '\\':
            out += '\\';
            break;
          case '/':
            out += '/';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'n':
            out += '\n';
            break;
          case 'r':
            out += '\r';
            break;
          case 't':
            out += '\t';
            break;
          default:
            return false;
        }
        continue;
      }
      if (c < 0x80) return false;  // a raw control character
      unsigned char lo = 0;
      unsigned char hi = 0;
      const auto tail = static_cast<std::size_t>(utf8_tail(c, lo, hi));
      if (tail == 0 || static_cast<std::size_t>(end_ - p_) <= tail) return false;
      for (std::size_t k = 1; k <= tail; ++k) {
        const auto b = static_cast<unsigned char>(p_[k]);
        if (b < lo || b > hi) return false;
        lo = 0x80;
        hi = 0xBF;
      }
      out.append(p_, tail + 1);
      p_ += tail + 1;
    }
  }

  // number() reads a non-negative integer in plain decimal, at most `max`.
  bool number(std::uint64_t max, std::uint64_t& out) {
    skip_space();
    if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
    std::uint64_t v = 0;
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
        const auto d = static_cast<std::uint64_t>(*p_ - '0');
        if (v > (max - d) / 10) return false;
        v = v * 10 + d;
        ++p_;
      }
    }
    if (p_ != end_ && ((*p_ >= '0' && *p_ <= '9') || *p_ == '.' || *p_ == 'e' || *p_ == 'E'))
      return false;
    out = v;
    return true;
  }

  const char* p_;
  const char* end_;
};

}  // namespace sluice::json_text
