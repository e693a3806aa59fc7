#include "docker/progress.h"

#include <utility>

namespace amlnode::docker {

JsonLineReader::JsonLineReader(Handler handler, std::size_t max_line)
    : handler_(std::move(handler)), max_line_(max_line) {}

void JsonLineReader::feed(std::string_view piece) {
  while (!piece.empty()) {
    auto newline = piece.find('\n');
    std::string_view part = piece.substr(0, newline);
    if (!dropping_) {
      if (line_.size() + part.size() > max_line_) {
        dropping_ = true;
        line_.clear();
      } else {
        line_.append(part);
      }
    }
    if (newline == std::string_view::npos) return;
    if (!dropping_) emit();
    dropping_ = false;
    line_.clear();
    piece.remove_prefix(newline + 1);
  }
}

void JsonLineReader::finish() {
  if (!dropping_) emit();
  dropping_ = false;
  line_.clear();
}

void JsonLineReader::emit() {
  while (!line_.empty() && (line_.back() == '\r' || line_.back() == ' ')) line_.pop_back();
  if (line_.empty()) return;
  nlohmann::json message;
  try {
    message = nlohmann::json::parse(line_);
  } catch (const nlohmann::json::exception&) {
    return;  // Not a message; the daemon never sends such lines.
  }
  handler_(message);
}

ProgressRelay::ProgressRelay(ProgressSink sink, std::function<std::string(std::string)> redact)
    : sink_(std::move(sink)), redact_(std::move(redact)) {}

void ProgressRelay::show(std::string text) {
  if (sink_ && !text.empty()) sink_(redact_ ? redact_(std::move(text)) : text);
}

void ProgressRelay::handle(const nlohmann::json& message) {
  if (!message.is_object()) return;
  if (message.contains("error") || message.contains("errorDetail")) {
    std::string text = message.value("error", "");
    if (auto detail = message.find("errorDetail"); detail != message.end() && detail->is_object()) {
      text = detail->value("message", text);
    }
    if (!error_) error_ = redact_ ? redact_(text) : text;
    show("error: " + text + "\n");
    return;
  }
  if (auto stream = message.find("stream"); stream != message.end() && stream->is_string()) {
    show(stream->get<std::string>());
  }
  if (auto status = message.find("status"); status != message.end() && status->is_string()) {
    auto detail = message.find("progressDetail");
    bool redraw = detail != message.end() && detail->is_object() && !detail->empty();
    if (!redraw) {
      std::string id = message.value("id", "");
      show((id.empty() ? "" : id + ": ") + status->get<std::string>() + "\n");
    }
  }
  if (auto aux = message.find("aux"); aux != message.end() && aux->is_object()) {
    if (auto id = aux->find("ID"); id != aux->end() && id->is_string()) {
      image_id_ = id->get<std::string>();
    }
  }
}

}  // namespace amlnode::docker
