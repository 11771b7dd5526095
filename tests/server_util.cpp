// server_util.cpp: starting, talking to and stopping a real `smoe serve` (see server_util.h).
#include "server_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <thread>

#include "test_util.h"

extern char** environ;

namespace smoe::test {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

ServerProcess::ServerProcess(const std::string& args, bool wait_ready_flag) {
  static int counter = 0;
  const std::string dir = temp_dir("serve_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  log_path_ = dir + "/stderr";
  const std::string cmd = std::string("exec '") + SMOE_BINARY + "' serve --port 0 " + args + " 2>'" + log_path_ + "'";
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  if (posix_spawn(&pid_, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv), environ) != 0) {
    pid_ = -1;
    return;
  }
  // The port, from "listening on http://HOST:PORT".
  const std::regex listening("listening on http://[^:]+:([0-9]+)");
  const auto t0 = Clock::now();
  while (seconds_since(t0) < 20) {
    std::smatch m;
    const std::string text = log();
    if (std::regex_search(text, m, listening)) {
      port_ = std::stoi(m[1]);
      break;
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {  // it exited
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (port_ > 0 && wait_ready_flag && !wait_ready()) port_ = -1;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) stop(SIGTERM);
}

bool ServerProcess::wait_ready(double timeout_s) {
  const auto t0 = Clock::now();
  while (seconds_since(t0) < timeout_s) {
    if (get(port_, "/health").status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string ServerProcess::log() const { return read_file(log_path_); }

httplib::Client ServerProcess::client() const {
  httplib::Client c("127.0.0.1", port_);
  c.set_read_timeout(30, 0);
  return c;
}

int ServerProcess::stop(int sig, double timeout_s) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  const auto t0 = Clock::now();
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (seconds_since(t0) > timeout_s) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      pid_ = -1;
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

namespace {
HttpResult to_result(const httplib::Result& res) {
  HttpResult r;
  if (!res) return r;
  r.status = res->status;
  r.raw = res->body;
  r.body = json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (r.body.is_discarded()) r.body = nullptr;
  return r;
}
}  // namespace

HttpResult post_json(int port, const std::string& path, const std::string& body, const httplib::Headers& headers) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  return to_result(c.Post(path.c_str(), headers, body, "application/json"));
}

HttpResult get(int port, const std::string& path, const httplib::Headers& headers) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  return to_result(c.Get(path.c_str(), headers));
}

StreamResult post_stream(int port, const std::string& path, const std::string& body,
                         const std::function<bool(const std::vector<json>&)>& keep_going) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  StreamResult r;
  std::string pending;
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.response_handler = [&](const httplib::Response& res) {
    r.status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    r.raw.append(data, n);
    pending.append(data, n);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos;) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") r.done = true;
      else r.chunks.push_back(json::parse(payload, nullptr, false));
    }
    return !keep_going || keep_going(r.chunks);
  };
  httplib::Result res = c.send(req);
  if (res && r.status < 0) r.status = res->status;
  return r;
}

std::string stream_text(const StreamResult& r, int64_t index) {
  std::string text;
  for (const json& c : r.chunks) {
    if (!c.is_object() || !c.contains("choices")) continue;
    for (const json& ch : c["choices"]) {
      if (ch.value("index", -1) != index) continue;
      if (ch.contains("text")) text += ch["text"].get<std::string>();
      if (ch.contains("delta") && ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
    }
  }
  return text;
}

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string raw_exchange(int port, const std::string& bytes, bool shutdown_write, double timeout_s) {
  const int fd = connect_to(port);
  if (fd < 0) return "";
  if (!bytes.empty()) (void)!::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  if (shutdown_write) ::shutdown(fd, SHUT_WR);
  std::string out;
  const auto t0 = Clock::now();
  char buf[4096];
  while (seconds_since(t0) < timeout_s) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) {
      if (!out.empty()) break;  // an answer came and nothing more follows
      continue;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

double metric(const std::string& text, const std::string& sample) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.size() > sample.size() && line.compare(0, sample.size(), sample) == 0 && line[sample.size()] == ' ')
      return std::stod(line.substr(sample.size() + 1));
  return -1;
}

}  // namespace smoe::test
