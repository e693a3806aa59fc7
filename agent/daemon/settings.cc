#include "agent/daemon/settings.h"

#include <arpa/inet.h>
#include <unistd.h>

#include "common/fs.h"

namespace amlnode::agent {

namespace {

using nlohmann::json;

// Reads one optional key of a section into `out`, checking its JSON type.
template <class T>
Result<void> read_key(const json& section, const char* key, const std::string& where, T& out) {
  auto it = section.find(key);
  if (it == section.end() || it->is_null()) return ok();
  try {
    out = it->get<T>();
  } catch (const json::exception&) {
    return Error{"InvalidConfig", where + key + ": wrong type"};
  }
  return ok();
}

Result<void> read_control_plane(const json& section, const std::string& where,
                                AgentSettings& settings) {
  std::string url;
  if (auto read = read_key(section, "url", where, url); !read) return read;
  if (url.empty())
    return Error{"InvalidConfig", where + "url: required (the control plane's address)"};
  auto endpoint = parse_http_url(url);
  if (!endpoint.ok()) return Error{"InvalidConfig", where + "url: " + endpoint.error().message};
  settings.endpoint = *endpoint;
  std::string token;
  std::string token_file;
  std::string ca_file;
  if (auto read = read_key(section, "registration_token", where, token); !read) return read;
  if (auto read = read_key(section, "registration_token_file", where, token_file); !read)
    return read;
  if (auto read = read_key(section, "ca_file", where, ca_file); !read) return read;
  if (auto read = read_key(section, "tls_verify", where, settings.tls.verify); !read) return read;
  if (!token.empty()) settings.registration_token = token;
  if (!token_file.empty()) settings.registration_token_file = token_file;
  if (!ca_file.empty()) settings.tls.ca_file = ca_file;
  return ok();
}

Result<void> read_scheduled_events(const json& node, const std::string& where,
                                   AgentSettings& settings) {
  ScheduledEventsSettings& events = settings.scheduled_events;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) events.vm_name = host;
  auto priority = settings.labels.find("vm_priority");
  events.enabled = priority != settings.labels.end() && priority->second == "lowpriority";
  auto section = node.find("scheduled_events");
  if (section == node.end() || section->is_null()) return ok();
  if (!section->is_object())
    return Error{"InvalidConfig", where + "scheduled_events: expected a mapping"};
  std::string path = where + "scheduled_events.";
  std::string url;
  int interval = static_cast<int>(events.interval.count());
  if (auto read = read_key(*section, "url", path, url); !read) return read;
  if (auto read = read_key(*section, "interval_seconds", path, interval); !read) return read;
  if (auto read = read_key(*section, "vm_name", path, events.vm_name); !read) return read;
  if (!url.empty()) {
    if (auto parsed = parse_http_url(url.substr(0, url.find('/', url.find("://") + 3)));
        !parsed.ok() || url.find("://") == std::string::npos)
      return Error{"InvalidConfig", path + "url: expected an http:// URL, got \"" + url + "\""};
    events.url = url;
    events.enabled = true;
  }
  if (interval < 1 || interval > 60)
    return Error{"InvalidConfig", path + "interval_seconds: expected 1 to 60"};
  events.interval = std::chrono::seconds(interval);
  return ok();
}

Result<void> read_node(const json& section, const std::string& where, AgentSettings& settings) {
  if (auto read = read_key(section, "labels", where, settings.labels); !read) return read;
  if (auto read = read_key(section, "ssh_port", where, settings.ssh_port); !read) return read;
  if (auto read = read_key(section, "address", where, settings.address); !read) return read;
  if (!settings.address.empty()) {
    unsigned char buffer[sizeof(in6_addr)];
    if (::inet_pton(AF_INET, settings.address.c_str(), buffer) != 1 &&
        ::inet_pton(AF_INET6, settings.address.c_str(), buffer) != 1)
      return Error{"InvalidConfig", where + "address: expected an IPv4 or IPv6 address, got \"" +
                                        settings.address + "\""};
  }
  if (auto read = read_key(section, "run_concurrency", where, settings.run_concurrency); !read)
    return read;
  if (auto read = read_key(section, "min_free_bytes", where, settings.min_free_bytes); !read)
    return read;
  int wait = static_cast<int>(settings.lease_wait.count());
  if (auto read = read_key(section, "lease_wait_seconds", where, wait); !read) return read;
  if (settings.run_concurrency < 1 || settings.run_concurrency > 64) {
    return Error{"InvalidConfig", where + "run_concurrency: expected 1 to 64"};
  }
  if (auto read = read_key(section, "ephemeral", where, settings.ephemeral); !read) return read;
  if (auto read = read_scheduled_events(section, where, settings); !read) return read;
  int expected_gpus = -1;
  if (auto read = read_key(section, "expected_gpus", where, expected_gpus); !read) return read;
  if (expected_gpus > 64) return Error{"InvalidConfig", where + "expected_gpus: expected 0 to 64"};
  if (expected_gpus >= 0) settings.expected_gpus = static_cast<unsigned>(expected_gpus);
  if (settings.ephemeral && settings.run_concurrency != 1)
    return Error{"InvalidConfig",
                 where + "run_concurrency: an ephemeral node takes one run, so only 1"};
  if (wait < 1 || wait > 60)
    return Error{"InvalidConfig", where + "lease_wait_seconds: expected 1 to 60"};
  settings.lease_wait = std::chrono::seconds(wait);
  return ok();
}

Result<void> read_metrics(const json& section, const std::string& where, MetricsSettings& out) {
  int interval = static_cast<int>(out.interval.count());
  std::string listen = "127.0.0.1:9108";
  bool allow_public = false;
  if (auto read = read_key(section, "interval_seconds", where, interval); !read) return read;
  if (auto read = read_key(section, "listen", where, listen); !read) return read;
  if (auto read = read_key(section, "allow_public", where, allow_public); !read) return read;
  if (interval < 1 || interval > 3600)
    return Error{"InvalidConfig", where + "interval_seconds: expected 1 to 3600"};
  out.interval = std::chrono::seconds(interval);
  out.listen.reset();
  if (listen.empty()) return ok();
  auto address = metrics::parse_listen_address(listen, allow_public, where + "listen");
  if (!address.ok()) return address.error();
  out.listen = *address;
  return ok();
}

}  // namespace

Result<AgentSettings> read_agent_settings(const NodeConfig& config) {
  AgentSettings settings;
  std::string file = config.file.empty() ? std::string("config") : config.file.string();
  if (auto read = read_control_plane(config.control_plane, file + ": control_plane.", settings);
      !read) {
    return read.error();
  }
  if (auto read = read_node(config.node, file + ": node.", settings); !read) return read.error();
  if (auto read = read_metrics(config.metrics, file + ": metrics.", settings.metrics); !read)
    return read.error();
  return settings;
}

Result<std::string> registration_token(const AgentSettings& settings) {
  if (settings.registration_token) return *settings.registration_token;
  if (!settings.registration_token_file) {
    return Error{
        "NotRegistered",
        "this node has no identity yet and the config gives no control_plane.registration_token "
        "or registration_token_file"};
  }
  auto text = read_file(*settings.registration_token_file, 64 * 1024);
  if (!text.ok()) return text.error();
  std::string token = *text;
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty())
    return Error{"NotRegistered", settings.registration_token_file->string() + " is empty"};
  return token;
}

}  // namespace amlnode::agent
