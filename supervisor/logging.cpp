#include "supervisor/logging.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <vector>

#include "supervisor/config.hpp"
#include "supervisor/output_capture.hpp"

namespace bulkhead::supervisor {

void setup_supervisor_log(const std::string& level, const std::string& file) {
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  console->set_pattern("%H:%M:%S.%e %^%-5l%$ %v");
  std::vector<spdlog::sink_ptr> sinks{console};
  if (!file.empty()) {
    auto f = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file);
    f->set_pattern("%Y-%m-%d %H:%M:%S.%e %-5l %v");
    sinks.push_back(std::move(f));
  }
  auto logger = std::make_shared<spdlog::logger>("bulkhead", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);  // a crash must not lose the last lines
  spdlog::set_default_logger(std::move(logger));
}

std::shared_ptr<spdlog::logger> open_child_log(const std::string& name, const std::string& path,
                                               std::uint64_t max_bytes, int max_files) {
  auto sink = std::make_shared<spdlog::sinks::rotating_file_sink_st>(
      path, static_cast<std::size_t>(max_bytes), static_cast<std::size_t>(max_files));
  auto logger = std::make_shared<spdlog::logger>(name, std::move(sink));
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %v");
  logger->set_level(spdlog::level::trace);
  return logger;
}

std::unique_ptr<OutputCapture> make_output_capture(const std::string& path, const ChildSpec& spec) {
  auto log = spdlog::default_logger();
  std::shared_ptr<spdlog::logger> sink = log;
  if (!spec.log_file.empty()) {
    std::string file = spec.log_file;
    for (auto at = file.find("{id}"); at != std::string::npos; at = file.find("{id}", at)) {
      file.replace(at, 4, spec.id);
      at += spec.id.size();
    }
    try {
      sink = open_child_log(path, file, spec.log_max_bytes, spec.log_max_files);
    } catch (const spdlog::spdlog_ex& e) {
      log->error("{}: cannot open log file {}: {}; its output goes to this log", path, file,
                 e.what());
    }
  }
  return std::make_unique<OutputCapture>(path, std::move(sink), std::move(log), spec.log_rate);
}

}  // namespace bulkhead::supervisor
