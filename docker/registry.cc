#include "docker/registry.h"

#include <nlohmann/json.hpp>

namespace amlnode::docker {

std::string ImageReference::version() const {
  if (!digest.empty()) return digest;
  return tag.empty() ? "latest" : tag;
}

std::string ImageReference::canonical() const {
  if (!digest.empty()) return name + "@" + digest;
  return name + ":" + (tag.empty() ? "latest" : tag);
}

ImageReference parse_image_reference(std::string_view reference) {
  ImageReference image;
  std::string_view rest = reference;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    image.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
  }
  auto last_slash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    image.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
  }
  image.name = std::string(rest);
  auto first_slash = rest.find('/');
  std::string_view first = rest.substr(0, first_slash);
  bool has_registry = first_slash != std::string_view::npos &&
                      (first.find('.') != std::string_view::npos ||
                       first.find(':') != std::string_view::npos || first == "localhost");
  image.domain = has_registry ? std::string(first) : "docker.io";
  return image;
}

std::string base64url(std::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    unsigned value = (static_cast<unsigned char>(data[i]) << 16) |
                     (static_cast<unsigned char>(data[i + 1]) << 8) |
                     static_cast<unsigned char>(data[i + 2]);
    out += kAlphabet[(value >> 18) & 63];
    out += kAlphabet[(value >> 12) & 63];
    out += kAlphabet[(value >> 6) & 63];
    out += kAlphabet[value & 63];
  }
  if (std::size_t left = data.size() - i; left > 0) {
    unsigned value = static_cast<unsigned char>(data[i]) << 16;
    if (left == 2) value |= static_cast<unsigned char>(data[i + 1]) << 8;
    out += kAlphabet[(value >> 18) & 63];
    out += kAlphabet[(value >> 12) & 63];
    out += left == 2 ? kAlphabet[(value >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string registry_auth_header(const spec::RegistryDetails& credentials,
                                 const ImageReference& image) {
  nlohmann::json auth = {
      {"username", credentials.username},
      {"password", credentials.password},
      {"serveraddress", credentials.address.empty() ? image.domain : credentials.address}};
  return base64url(auth.dump());
}

std::string registry_config_header(const spec::RegistryDetails& credentials) {
  nlohmann::json config = {
      {credentials.address,
       {{"username", credentials.username}, {"password", credentials.password}}}};
  return base64url(config.dump());
}

std::string redact(std::string text, const std::optional<spec::RegistryDetails>& credentials) {
  if (!credentials || credentials->password.empty()) return text;
  const std::string& secret = credentials->password;
  for (auto at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 8)) {
    text.replace(at, secret.size(), "********");
  }
  return text;
}

}  // namespace amlnode::docker
