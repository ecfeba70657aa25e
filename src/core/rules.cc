#include "sluice/rules.h"

#include <functional>
#include <stdexcept>

namespace sluice {

namespace {

// Separates a limit's identity (length-prefixed parts, never ambiguous) from its index and spec.
constexpr char kSep = '\x1f';
// The deepest descriptor tree compile() accepts (the loader refuses deeper ones first).
constexpr int kMaxDepth = 64;

std::string spec_tag(const LimitSpec& spec) {
  std::string tag;
  tag += static_cast<char>('0' + static_cast<int>(spec.algorithm));
  tag += std::to_string(spec.window);
  return tag;
}

void validate(const LimitDef& def, std::string_view where) {
  if (def.unlimited) return;
  const LimitSpec& s = def.spec;
  if (static_cast<unsigned>(s.algorithm) > static_cast<unsigned>(Algorithm::kTokenBucket)) {
    throw std::invalid_argument(std::string(where) + ": unknown algorithm");
  }
  if (s.window <= 0 || s.window > kMaxWindow) {
    throw std::invalid_argument(std::string(where) + ": window out of range");
  }
  if (s.limit > kMaxLimit) throw std::invalid_argument(std::string(where) + ": limit too large");
  if (s.burst > kMaxLimit) throw std::invalid_argument(std::string(where) + ": burst too large");
  if (s.limit != 0 && !refill_fits(s)) {
    throw std::invalid_argument(std::string(where) + ": the bucket takes over 100 years to refill");
  }
}

}  // namespace

Micros unit_micros(Unit u) noexcept {
  constexpr Micros kSecond = 1'000'000;
  switch (u) {
    case Unit::kSecond:
      return kSecond;
    case Unit::kMinute:
      return 60 * kSecond;
    case Unit::kHour:
      return 3600 * kSecond;
    case Unit::kDay:
      return 86'400 * kSecond;
    case Unit::kWeek:
      return 7 * 86'400 * kSecond;
    case Unit::kMonth:
      return 30 * 86'400 * kSecond;
    case Unit::kYear:
      return 365 * 86'400 * kSecond;
    case Unit::kUnknown:
      break;
  }
  return 0;
}

const char* unit_name(Unit u) noexcept {
  switch (u) {
    case Unit::kSecond:
      return "second";
    case Unit::kMinute:
      return "minute";
    case Unit::kHour:
      return "hour";
    case Unit::kDay:
      return "day";
    case Unit::kWeek:
      return "week";
    case Unit::kMonth:
      return "month";
    case Unit::kYear:
      return "year";
    case Unit::kUnknown:
      break;
  }
  return "unknown";
}

LimitDef LimitDef::per_unit(std::uint64_t n, Unit unit, Algorithm algorithm) {
  LimitDef def;
  def.spec.algorithm = algorithm;
  def.spec.limit = n;
  def.spec.window = unit_micros(unit);
  def.unit = unit;
  return def;
}

bool glob_match(std::string_view pattern, std::string_view text) noexcept {
  // Iterative matcher with one backtrack point: linear in practice, never exponential.
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*')
    ++p;
  return p == pattern.size();
}

void append_key_value(std::string& out, std::string_view value) {
  // Length as a little-endian base-128 varint, then the bytes.
  std::size_t n = value.size();
  do {
    auto byte = static_cast<unsigned char>(n & 0x7f);
    n >>= 7;
    if (n != 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (n != 0);
  out.append(value);
}

std::size_t RuleSet::StringHash::operator()(std::string_view s) const noexcept {
  return std::hash<std::string_view>{}(s);
}

// --- compiled structures --------------------------------------------------------------------

struct RuleSet::Node {
  struct KeyGroup {
    std::unordered_map<std::string, Node*, StringHash, std::equal_to<>> exact;
    std::vector<std::pair<std::string, Node*>> wildcards;  // in file order
    Node* by_default = nullptr;                            // the key-only node
  };
  std::vector<CompiledLimit> limits;
  std::unordered_map<std::string, KeyGroup, StringHash, std::equal_to<>> children;
};

struct RuleSet::Domain {
  std::vector<std::unique_ptr<Node>> nodes;  // owns every node of the tree
  Node root;
};

struct RuleSet::CompiledPathRule {
  std::string path;
  bool wildcard = false;
  struct Desc {
    std::string key;
    std::optional<std::string> value;
    std::vector<CompiledLimit> limits;
  };
  std::vector<Desc> descriptors;
};

namespace {

std::vector<CompiledLimit> compile_limits(const std::vector<LimitDef>& defs,
                                          const std::string& place, const std::string& key_base,
                                          bool shadow) {
  std::vector<CompiledLimit> out;
  out.reserve(defs.size());
  for (std::size_t i = 0; i < defs.size(); ++i) {
    const LimitDef& def = defs[i];
    validate(def, place);
    CompiledLimit c;
    c.spec = def.spec;
    c.unit = def.unit;
    c.replace_name = def.name;
    c.name = !def.name.empty() ? def.name
                               : (defs.size() > 1 ? place + "[" + std::to_string(i) + "]" : place);
    c.replaces = def.replaces;
    c.shadow = shadow;
    c.unlimited = def.unlimited;
    c.failure_mode = def.failure_mode;
    c.key_prefix = key_base;
    c.key_prefix += kSep;
    c.key_prefix += std::to_string(i);
    c.key_prefix += kSep;
    c.key_prefix += spec_tag(def.spec);
    c.key_prefix += kSep;
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

std::shared_ptr<const RuleSet> RuleSet::compile(RuleSource source) {
  std::shared_ptr<RuleSet> set(new RuleSet());
  std::size_t count = 0;

  for (const DomainRules& d : source.domains) {
    if (d.domain.empty()) throw std::invalid_argument("domain must not be empty");
    if (set->domains_.count(d.domain) != 0) {
      throw std::invalid_argument("duplicate domain '" + d.domain + "'");
    }
    auto domain = std::make_unique<Domain>();
    Domain* dom = domain.get();

    // Depth-first. `place` is Envoy's dotted full key ("domain.key_value.key"), for names and
    // messages; `key_base` identifies the node in store keys: every key and value
    // length-prefixed, so no two nodes (nor a node and a path rule) can share a counter.
    std::function<void(Node&, const std::vector<DescriptorRule>&, const std::string&,
                       const std::string&, int)>
        build = [&](Node& parent, const std::vector<DescriptorRule>& rules,
                    const std::string& parent_place, const std::string& parent_key, int depth) {
          if (depth > kMaxDepth) {
            throw std::invalid_argument(parent_place + ": descriptors nested too deep");
          }
          for (const DescriptorRule& r : rules) {
            if (r.key.empty()) {
              throw std::invalid_argument(parent_place + ": descriptor has empty key");
            }
            std::string final_key = r.value.empty() ? r.key : r.key + "_" + r.value;
            std::string place = parent_place + "." + final_key;
            auto& group = parent.children[r.key];
            dom->nodes.push_back(std::make_unique<Node>());
            Node* node = dom->nodes.back().get();
            bool duplicate = false;
            if (r.value.empty()) {
              duplicate = group.by_default != nullptr;
              group.by_default = node;
            } else if (r.value.find('*') != std::string::npos) {
              for (auto& [pattern, _] : group.wildcards)
                duplicate |= pattern == r.value;
              group.wildcards.emplace_back(r.value, node);
            } else {
              duplicate = !group.exact.emplace(r.value, node).second;
            }
            if (duplicate) {
              throw std::invalid_argument("duplicate descriptor composite key '" + place + "'");
            }
            std::string key_base = parent_key;
            append_key_value(key_base, r.key);
            append_key_value(key_base, r.value);
            node->limits = compile_limits(r.limits, place, key_base, r.shadow_mode);
            count += node->limits.size();
            build(*node, r.descriptors, place, key_base, depth + 1);
          }
        };
    std::string domain_key(1, 'E');
    append_key_value(domain_key, d.domain);
    build(dom->root, d.descriptors, d.domain, domain_key, 1);
    set->domains_.emplace(d.domain, std::move(domain));
  }

  for (const PathRule& r : source.path_rules) {
    auto rule = std::make_unique<CompiledPathRule>();
    rule->path = r.path;
    rule->wildcard = r.path.find('*') != std::string::npos;
    for (const PathDescriptorRule& pd : r.descriptors) {
      if (pd.key.empty()) throw std::invalid_argument("path rule " + r.path + ": empty key");
      std::string place = "path:" + r.path + "." + pd.key + (pd.value ? "_" + *pd.value : "");
      std::string key_base(1, 'P');
      append_key_value(key_base, r.path);
      append_key_value(key_base, pd.key);
      if (pd.value) {
        key_base += '=';
        append_key_value(key_base, *pd.value);
      }
      rule->descriptors.push_back(
          {pd.key, pd.value, compile_limits(pd.limits, place, key_base, pd.shadow_mode)});
      count += rule->descriptors.back().limits.size();
    }
    set->path_rules_.push_back(std::move(rule));
  }

  set->limit_count_ = count;
  set->source_ = std::move(source);
  return set;
}

std::shared_ptr<const RuleSet> RuleSet::empty() {
  return compile(RuleSource{});
}

RuleSet::~RuleSet() = default;

bool RuleSet::has_domain(std::string_view domain) const noexcept {
  return domains_.find(domain) != domains_.end();
}

const std::vector<CompiledLimit>* RuleSet::match(std::string_view domain,
                                                 const Descriptor& descriptor) const noexcept {
  auto it = domains_.find(domain);
  if (it == domains_.end()) return nullptr;
  const Node* level = &it->second->root;
  const std::vector<CompiledLimit>* found = nullptr;
  const std::size_t n = descriptor.entries.size();
  for (std::size_t i = 0; i < n; ++i) {
    const DescriptorEntry& entry = descriptor.entries[i];
    const Node* next = nullptr;
    auto group = level->children.find(std::string_view(entry.key));
    if (group != level->children.end()) {
      const Node::KeyGroup& g = group->second;
      auto exact = g.exact.find(std::string_view(entry.value));
      if (exact != g.exact.end()) next = exact->second;
      if (next == nullptr) {
        for (const auto& [pattern, node] : g.wildcards) {
          if (glob_match(pattern, entry.value)) {
            next = node;
            break;
          }
        }
      }
      if (next == nullptr) next = g.by_default;
    }
    if (next == nullptr) break;
    // The limit applies only at the depth of the request's last entry.
    if (i + 1 == n && !next->limits.empty()) found = &next->limits;
    if (next->children.empty()) break;
    level = next;
  }
  return found;
}

void RuleSet::match_path(const PathRequest& request, std::vector<PathMatch>& out) const {
  for (const auto& rule : path_rules_) {
    const bool applies =
        rule->wildcard ? glob_match(rule->path, request.path) : rule->path == request.path;
    if (!applies) continue;
    for (const auto& d : rule->descriptors) {
      for (std::size_t i = 0; i < request.data.size(); ++i) {
        const auto& [key, value] = request.data[i];
        if (key != d.key) continue;
        if (!d.value || *d.value == value) {
          out.push_back({&d.limits, static_cast<std::uint32_t>(i)});
        }
        break;  // the first entry with the key decides
      }
    }
  }
}

}  // namespace sluice
