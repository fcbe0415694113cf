# frozen_string_literal: true

# A Ruby program that ships Python code to Capstan and uses it, with no
# Python on its side: it writes a folder holding greeter.py, uploads it as a
# package, deploys it, calls it through the DataPlane and over HTTP, scales
# it, reads a structured error and deletes it. It prints what it saw as one
# JSON object.
#
#   ruby -I clients/ruby/lib -I clients/ruby/examples clients/ruby/examples/deploy_greeter.rb \
#        127.0.0.1:8765 127.0.0.1:9000 http://127.0.0.1:8000

require 'json'
require 'net/http'
require 'tmpdir'
require 'google/protobuf/well_known_types'
require 'capstan/v1/controlplane_services_pb'
require 'capstan/v1/dataplane_services_pb'
require 'capstan/v1/packages_services_pb'
require 'packaging'
require 'rich_errors'

GREETER_PY = <<~PYTHON
  class Greeter:
      def greet(self, name, punct="!"):
          return f"Hello, {name}{punct}"

      def spell(self, name):
          yield from name

      async def __call__(self, request):
          return {"greeting": self.greet(request.query_params.get("name", "world"))}
PYTHON

NAME = 'ruby_greeter'
ROUTE = '/ruby-greeter'
V1 = Capstan::V1

def greeter_spec(working_dir, num_cpus: 0.25)
  V1::DeploymentSpec.new(
    name: NAME, route_prefix: ROUTE, num_replicas: 1,
    code: V1::Code.new(import_path: 'greeter:Greeter'),
    replica_options: V1::ReplicaOptions.new(
      num_cpus: num_cpus, runtime_env: V1::RuntimeEnv.new(working_dir: working_dir)
    )
  )
end

# Positional and keyword arguments travel as JSON values (ListValue, Struct).
def arguments(*args, **kwargs)
  V1::Arguments.new(
    args: Google::Protobuf::ListValue.from_a(args),
    kwargs: Google::Protobuf::Struct.from_hash(kwargs.transform_keys(&:to_s))
  )
end

def pack_greeter
  Dir.mktmpdir do |folder|
    File.write(File.join(folder, 'greeter.py'), GREETER_PY)
    CapstanExample::Packaging.tar_gz(folder)
  end
end

def use_greeter(control, dataplane, http_url, seen)
  request = V1::CallRequest.new(deployment: NAME, method_name: 'greet', arguments: arguments('Ada', punct: '?'))
  seen['result'] = dataplane.call(request).result.to_ruby
  request = V1::CallStreamRequest.new(deployment: NAME, method_name: 'spell', arguments: arguments('Ada'))
  seen['streamed'] = dataplane.call_stream(request).map { |response| response.item.to_ruby }
  reply = Net::HTTP.get_response(URI("#{http_url}#{ROUTE}?name=Ada"))
  seen['http'] = [reply.code.to_i, JSON.parse(reply.body)]
  request = V1::ScaleDeploymentRequest.new(name: NAME, num_replicas: 2, wait: true, timeout_s: 60)
  replicas = control.scale_deployment(request).deployment.replicas
  seen['scaled_running'] = replicas.count { |replica| replica.state == :REPLICA_STATE_RUNNING }
end

def provoke_invalid_argument(control, working_dir)
  control.apply_deployment(V1::ApplyDeploymentRequest.new(spec: greeter_spec(working_dir, num_cpus: -1)))
  'accepted'
rescue GRPC::BadStatus => e
  CapstanExample::RichErrors.describe(e)
end

control_address, dataplane_address, http_url = ARGV
abort "usage: #{$PROGRAM_NAME} CONTROL_ADDRESS DATAPLANE_ADDRESS HTTP_URL" unless http_url
control = V1::ControlPlaneService::Stub.new(control_address, :this_channel_is_insecure)
packages = V1::PackageService::Stub.new(control_address, :this_channel_is_insecure)
dataplane = V1::DataPlaneService::Stub.new(dataplane_address, :this_channel_is_insecure)
seen = {}

package = CapstanExample::Packaging.upload(packages, pack_greeter).package
seen['package_uri'] = package.uri
# Content-addressed: the same folder again is the same package, stored once.
seen['again_already_stored'] = CapstanExample::Packaging.upload(packages, pack_greeter).already_stored
begin
  request = V1::ApplyDeploymentRequest.new(spec: greeter_spec(package.uri), wait: true, timeout_s: 60)
  seen['applied_state'] = control.apply_deployment(request).deployment.state.to_s
  use_greeter(control, dataplane, http_url, seen)
  seen['invalid'] = provoke_invalid_argument(control, package.uri)
ensure
  begin
    control.delete_deployment(V1::DeleteDeploymentRequest.new(name: NAME, wait: true))
  rescue GRPC::NotFound
    nil # the apply failed before storing anything; its error is the one to see
  end
end
# Listing comes in pages (AIP-158): follow next_page_token until it is empty.
seen['after_delete'] = []
page_token = ''
loop do
  page = control.list_deployments(V1::ListDeploymentsRequest.new(page_token: page_token))
  seen['after_delete'].concat(page.deployments.map(&:id))
  page_token = page.next_page_token
  break if page_token.empty?
end

puts JSON.generate(seen)
