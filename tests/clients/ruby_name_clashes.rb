# frozen_string_literal: true

# Prints, as a JSON list, the fields of the generated capstan.v1 messages
# whose Ruby accessors lose to a public method every Ruby object has (as
# `req.method` did): `msg.methods` calls Object#methods, not the field.
# Private Kernel methods (`format`) do not clash: a call with a receiver
# reaches the message's own accessor.

require 'json'
%w[controlplane dataplane deployment packages].each { |name| require "capstan/v1/#{name}_pb" }

def accessors(field)
  [field.name, "#{field.name}=", "has_#{field.name}?", "clear_#{field.name}"]
end

messages = Capstan::V1.constants.map { |name| Capstan::V1.const_get(name) }
                      .select { |value| value.respond_to?(:descriptor) && value.descriptor.is_a?(Google::Protobuf::Descriptor) }
clashes = messages.flat_map do |message|
  message.descriptor.select { |field| accessors(field).any? { |name| Object.public_method_defined?(name) } }
                    .map { |field| "#{message.descriptor.name}.#{field.name}" }
end
puts JSON.generate(clashes.sort)
