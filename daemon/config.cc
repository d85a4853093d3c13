#include "daemon/config.h"

#include "engine/chat_template.h"
#include "runtime/planner.h"
#include "storage/block_reader.h"

namespace dcomp::server {

Status ValidateDaemonConfig(const v1::DaemonConfig& c, const std::string& source) {
  RETURN_IF_ERROR(config::ValidateDaemonConfig(c, source));
  if (Result<runtime::Policy> p = runtime::ParsePolicy(c.policy()); !p.ok()) {
    return config::FieldError(source, "policy", p.status().message());
  }
  if (Result<storage::ReaderBackend> r = storage::ParseReaderBackend(c.reader()); !r.ok()) {
    return config::FieldError(source, "reader", r.status().message());
  }
  if (!c.chat_template().empty()) {
    if (Result<ChatFamily> f = ParseChatFamily(c.chat_template()); !f.ok()) {
      return config::FieldError(source, "chat_template", f.status().message());
    }
  }
  return Status::Ok();
}

}  // namespace dcomp::server
