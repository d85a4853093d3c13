#include "daemon/reflection.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <set>

namespace dcomp::server {
namespace {

namespace pb = google::protobuf;
namespace refl = grpc::reflection::v1;

// `file` and its dependencies not in `sent`, dependencies first.
void AddFile(const pb::FileDescriptor* file, std::set<std::string>* sent,
             refl::FileDescriptorResponse* out) {
  if (!sent->insert(file->name()).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) AddFile(file->dependency(i), sent, out);
  pb::FileDescriptorProto proto;
  file->CopyTo(&proto);
  proto.SerializeToString(out->add_file_descriptor_proto());
}

void SetError(refl::ServerReflectionResponse* resp, grpc::StatusCode code,
              const std::string& message) {
  resp->mutable_error_response()->set_error_code(static_cast<int32_t>(code));
  resp->mutable_error_response()->set_error_message(message);
}

}  // namespace

grpc::Status ReflectionV1::ServerReflectionInfo(
    grpc::ServerContext*,
    grpc::ServerReaderWriter<refl::ServerReflectionResponse, refl::ServerReflectionRequest>*
        stream) {
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  std::set<std::string> sent;  // files this stream has sent
  refl::ServerReflectionRequest req;
  while (stream->Read(&req)) {
    refl::ServerReflectionResponse resp;
    resp.set_valid_host(req.host());
    *resp.mutable_original_request() = req;
    const pb::FileDescriptor* file = nullptr;
    std::string missing;
    switch (req.message_request_case()) {
      case refl::ServerReflectionRequest::kListServices:
        for (const std::string& s : services_) {
          resp.mutable_list_services_response()->add_service()->set_name(s);
        }
        break;
      case refl::ServerReflectionRequest::kFileByFilename:
        file = pool->FindFileByName(req.file_by_filename());
        missing = "file " + req.file_by_filename();
        break;
      case refl::ServerReflectionRequest::kFileContainingSymbol:
        file = pool->FindFileContainingSymbol(req.file_containing_symbol());
        missing = "symbol " + req.file_containing_symbol();
        break;
      case refl::ServerReflectionRequest::kFileContainingExtension: {
        const refl::ExtensionRequest& e = req.file_containing_extension();
        const pb::Descriptor* type = pool->FindMessageTypeByName(e.containing_type());
        const pb::FieldDescriptor* ext =
            type ? pool->FindExtensionByNumber(type, e.extension_number()) : nullptr;
        if (ext != nullptr) file = ext->file();
        missing =
            "extension " + std::to_string(e.extension_number()) + " of " + e.containing_type();
        break;
      }
      case refl::ServerReflectionRequest::kAllExtensionNumbersOfType: {
        const pb::Descriptor* type =
            pool->FindMessageTypeByName(req.all_extension_numbers_of_type());
        if (type == nullptr) {
          SetError(&resp, grpc::StatusCode::NOT_FOUND,
                   "type " + req.all_extension_numbers_of_type() + " not found");
          break;
        }
        std::vector<const pb::FieldDescriptor*> exts;
        pool->FindAllExtensions(type, &exts);
        refl::ExtensionNumberResponse* out = resp.mutable_all_extension_numbers_response();
        out->set_base_type_name(type->full_name());
        for (const pb::FieldDescriptor* f : exts) out->add_extension_number(f->number());
        break;
      }
      default:
        SetError(&resp, grpc::StatusCode::INVALID_ARGUMENT,
                 "expected one of file_by_filename, file_containing_symbol, "
                 "file_containing_extension, all_extension_numbers_of_type, list_services");
    }
    if (!missing.empty()) {
      if (file == nullptr) {
        SetError(&resp, grpc::StatusCode::NOT_FOUND, missing + " not found");
      } else {
        AddFile(file, &sent, resp.mutable_file_descriptor_response());
      }
    }
    if (!stream->Write(resp)) break;
  }
  return grpc::Status::OK;
}

}  // namespace dcomp::server
