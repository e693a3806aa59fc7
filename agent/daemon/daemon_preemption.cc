// Low-priority preemption (docs/compute.md, "Preemption"). Azure tells a low-priority VM of its
// eviction through the instance metadata service's Scheduled Events, about 30 s ahead. The agent
// polls it; on a Preempt event naming this VM it takes no new run, reports `preempted`, stops its
// runs as a cancel stops them (SIGTERM to every process, the grace, SIGKILL) but reports no status
// for them, ships their logs to the last byte, and lets go of each: its heartbeat no longer lists
// it, and the control plane queues it again, as Azure ML restarts a preempted job (the earlier
// attempt's logs kept). Once it holds nothing it acknowledges the event (StartRequests).

#include <spdlog/spdlog.h>

#include "agent/daemon/daemon.h"
#include "common/error_codes.h"
#include "common/json.h"

namespace amlnode::agent {

namespace {

// The scheduled events URL split into the endpoint and the request target.
std::pair<std::string, std::string> split_url(const std::string& url) {
  auto path = url.find('/', url.find("://") + 3);
  if (path == std::string::npos) return {url, "/"};
  return {url.substr(0, path), url.substr(path)};
}

// The id of the first Preempt event of the document for this VM, "" when it has none. IMDS lists
// the events of every VM of a scale set's placement group to each of them: an event whose
// Resources do not name this VM is another's.
std::string preempt_event_of(const std::string& body, const std::string& vm_name) {
  auto document = parse_untrusted_json(body);
  if (!document.is_object() || !document["Events"].is_array()) return "";
  for (const auto& event : document["Events"]) {
    if (!event.is_object() || event.value("EventType", nlohmann::json()) != "Preempt") continue;
    bool ours = false;
    if (event.contains("Resources") && event["Resources"].is_array())
      for (const auto& resource : event["Resources"]) ours = ours || resource == vm_name;
    if (!ours) continue;
    if (event.contains("EventId") && event["EventId"].is_string())
      return event["EventId"].get<std::string>();
  }
  return "";
}

HttpRequest metadata_request(const std::string& method, const std::string& target,
                             std::string body = "") {
  HttpRequest request;
  request.method = method;
  request.target = target;
  request.headers = {{"Metadata", "true"}};
  request.timeout = std::chrono::seconds(5);
  request.max_response_bytes = 1 << 20;
  if (!body.empty()) {
    request.content_type = "application/json";
    request.body = std::move(body);
  }
  return request;
}

}  // namespace

void Daemon::start_event_polling() {
  const auto& events = options_.settings.scheduled_events;
  if (!events.enabled) return;
  auto [origin, target] = split_url(events.url);
  auto endpoint = parse_http_url(origin);
  if (!endpoint.ok()) {
    spdlog::error("scheduled events: {}", endpoint.error().message);
    return;
  }
  events_client_ = make_http_client(*endpoint);
  events_target_ = target;
  spdlog::info("watching for preemption at {}", events.url);
  poll_scheduled_events();
}

void Daemon::poll_scheduled_events() {
  if (stopped_ || preempted_ || !events_client_) return;
  offload(
      [client = events_client_, target = events_target_,
       vm = options_.settings.scheduled_events.vm_name]() -> Result<std::string> {
        auto answer = client->send(metadata_request("GET", target));
        if (!answer.ok()) return answer.error();
        if (answer->status != 200)
          return Error{errors::kRejected, "HTTP " + std::to_string(answer->status)};
        return preempt_event_of(answer->body, vm);
      },
      [this](Result<std::string> event) {
        if (stopped_) return;
        if (event.ok() && !event->empty()) return begin_preemption(*event);
        if (!event.ok()) spdlog::debug("scheduled events: {}", event.error().message);
        events_timer_.expires_after(options_.settings.scheduled_events.interval);
        events_timer_.async_wait([this](const boost::system::error_code& ec) {
          if (!ec) poll_scheduled_events();
        });
      });
}

void Daemon::begin_preemption(const std::string& event_id) {
  spdlog::warn("preempted (scheduled event {}): stopping every run and letting go of it", event_id);
  preempted_ = true;
  preempt_event_id_ = event_id;
  notify_state();
  for (auto& [id, run] : runs_) {
    if (run.concluded) continue;  // ended by itself: it reports as it ended
    // Only a run the stop moves on: one already finishing, or canceled by its user, ends as it
    // would have.
    auto transition = run.lifecycle.cancel(std::chrono::steady_clock::now());
    if (!transition.entered) continue;
    run.preempted = true;
    if (run.preparing) canceled_in_preparation_->add(id);
    apply(run, transition);
  }
  heartbeat_now();
}

// Called when the node may have let go of its last run: a heartbeat that said `preempted` with
// no run must reach the control plane before the acknowledgement lets Azure take the VM.
void Daemon::after_preempted_heartbeat(const HeartbeatReport& reported) {
  if (!preempted_ || reported.state != "preempted" || !reported.runs.empty()) return;
  preemption_reported_ = true;
  maybe_acknowledge_preemption();
}

// A preempted run's logs are all delivered: the node lets go of it without a status, and the
// control plane queues it again once a heartbeat no longer lists it.
void Daemon::let_go_of_preempted(const std::string& run_id) {
  spdlog::info("run {}: let go of (preempted); the control plane queues it again", run_id);
  forget_run(run_id);
  heartbeat_now();
  maybe_acknowledge_preemption();
}

void Daemon::maybe_acknowledge_preemption() {
  if (!preempted_ || preemption_acknowledged_ || acknowledging_ || !preemption_reported_ ||
      !runs_.empty() || !retiring_.empty())
    return;
  acknowledging_ = true;
  nlohmann::json body = {{"StartRequests", {{{"EventId", preempt_event_id_}}}}};
  offload(
      [client = events_client_, target = events_target_, body = body.dump()]() -> Result<void> {
        auto answer = client->send(metadata_request("POST", target, body));
        if (!answer.ok()) return answer.error();
        if (answer->status != 200)
          return Error{errors::kRejected, "HTTP " + std::to_string(answer->status)};
        return ok();
      },
      [this, id = preempt_event_id_](Result<void> acknowledged) {
        acknowledging_ = false;
        if (acknowledged.ok()) {
          preemption_acknowledged_ = true;
          spdlog::info("preemption acknowledged (scheduled event {})", id);
          return;
        }
        // Tried again with the next heartbeat's answer.
        spdlog::error("cannot acknowledge scheduled event {}: {}", id,
                      acknowledged.error().message);
      });
}

}  // namespace amlnode::agent
