#pragma once

// Image references and registry credentials. A password travels only inside the base64url JSON of
// the X-Registry-Auth / X-Registry-Config headers; every text this library shows or returns goes
// through `redact` first, so a daemon message that quoted it would not leak it either.

#include <optional>
#include <string>
#include <string_view>

#include "spec/job.h"

namespace amlnode::docker {

// "registry:5000/team/image:tag@sha256:..." taken apart the way Docker does.
struct ImageReference {
  std::string domain;  // "docker.io" when the name has no registry part
  std::string name;    // everything before the tag or digest, as written
  std::string tag;     // empty when none was written
  std::string digest;  // "sha256:...", empty when none

  // The tag or digest to ask for: the digest, else the tag, else "latest" (an empty tag would
  // make the daemon pull every tag of the repository).
  std::string version() const;
  // name:tag or name@digest, as the image is known locally once pulled.
  std::string canonical() const;
};

ImageReference parse_image_reference(std::string_view reference);

std::string base64url(std::string_view data);

// The X-Registry-Auth value for a pull (base64url JSON with username, password, serveraddress).
// The server address is the credentials' address, else the image's registry.
std::string registry_auth_header(const spec::RegistryDetails& credentials,
                                 const ImageReference& image);
// The X-Registry-Config value for a build whose Dockerfile pulls from that registry.
std::string registry_config_header(const spec::RegistryDetails& credentials);

// `text` with every occurrence of the password replaced by "********".
std::string redact(std::string text, const std::optional<spec::RegistryDetails>& credentials);

}  // namespace amlnode::docker
