# frozen_string_literal: true

# Reads Capstan's structured errors: every failed call carries a
# google.rpc.Status in the `grpc-status-details-bin` trailer, whose details
# hold a google.rpc.ErrorInfo (why, in a word, and which deployment) and, for
# INVALID_ARGUMENT, a google.rpc.BadRequest naming the field in proto names.
# Debian's ruby-grpc depends on ruby-googleapis-common-protos-types, which
# ships the google/rpc message classes.

require 'grpc'
require 'google/protobuf/well_known_types' # Any#unpack
require 'google/rpc/error_details_pb'
require 'google/rpc/status_pb'

module CapstanExample
  module RichErrors
    CODE_NAMES = GRPC::Core::StatusCodes.constants.to_h do |name|
      [GRPC::Core::StatusCodes.const_get(name), name.to_s]
    end

    # A GRPC::BadStatus as a plain Hash: code name, message, and the details.
    def self.describe(error)
      status = error.to_rpc_status # decodes grpc-status-details-bin; nil if absent
      details = status ? status.details : []
      {
        'code' => CODE_NAMES.fetch(error.code),
        'message' => error.details,
        'error_info' => details.filter_map { |any| any.unpack(Google::Rpc::ErrorInfo) }.map(&:to_h).first,
        'field_violations' => details.filter_map { |any| any.unpack(Google::Rpc::BadRequest) }
                                     .flat_map { |bad| bad.field_violations.map(&:to_h) }
      }
    end
  end
end
