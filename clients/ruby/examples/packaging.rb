# frozen_string_literal: true

# Ships a folder of code to Capstan: packs it as a gzipped tar (Ruby's
# standard library only) and uploads it with PackageService.UploadPackage,
# which names the package by the sha256 of the archive's bytes.

require 'digest'
require 'rubygems/package'
require 'stringio'
require 'zlib'
require 'capstan/v1/packages_services_pb'

module CapstanExample
  module Packaging
    # The server advises at most 1 MiB per chunk.
    CHUNK_BYTES = 1 << 20

    # The folder's files as a .tar.gz, paths relative to the folder's root.
    # The same files give the same bytes (no timestamps), so the same package
    # name: uploading an unchanged folder again stores nothing new.
    def self.tar_gz(folder)
      buffer = StringIO.new(+'', 'wb')
      gzip = Zlib::GzipWriter.new(buffer)
      gzip.mtime = 1 # zlib writes the current time in place of 0
      Dir.glob('**/*', base: folder).sort.each do |name|
        path = File.join(folder, name)
        gzip.write(tar_entry(name, File.binread(path))) if File.file?(path)
      end
      gzip.write("\0" * 1024) # two empty blocks end a tar archive
      gzip.finish
      buffer.string
    end

    def self.tar_entry(name, data)
      raise ArgumentError, "#{name}: paths in this tar writer are at most 100 bytes" if name.bytesize > 100

      header = Gem::Package::TarHeader.new(name: name, prefix: '', mode: 0o644, size: data.bytesize, mtime: 0)
      header.to_s + data + ("\0" * ((512 - (data.bytesize % 512)) % 512))
    end

    # Uploads an archive unless the control plane has it; returns an
    # UploadPackageResponse (the stored package, and whether it was there
    # already). Asking first matters in Ruby: for a stored package the server
    # answers before reading the bytes, and grpc-ruby 1.51's client_streamer
    # then waits for the status forever (the deadline ends that, as an error).
    def self.upload(stub, archive, format: :PACKAGE_FORMAT_TAR_GZ, timeout_s: 60)
      sha256 = Digest::SHA256.hexdigest(archive)
      known = stub.get_package(Capstan::V1::GetPackageRequest.new(sha256: sha256))
      if known.state == :PACKAGE_STATE_STORED
        return Capstan::V1::UploadPackageResponse.new(package: known.package, already_stored: true)
      end

      offset = known.state == :PACKAGE_STATE_PARTIAL ? known.received_bytes : 0 # resume
      metadata = Capstan::V1::PackageMetadata.new(
        sha256: sha256, size_bytes: archive.bytesize, format: format, offset: offset
      )
      stub.upload_package(requests(metadata, archive), deadline: Time.now + timeout_s)
    end

    # The metadata first, then the bytes from its offset in chunks: the call
    # is client streaming, so the stub takes an enumerator of requests.
    def self.requests(metadata, archive)
      Enumerator.new do |out|
        out << Capstan::V1::UploadPackageRequest.new(metadata: metadata)
        (metadata.offset...archive.bytesize).step(CHUNK_BYTES) do |start|
          out << Capstan::V1::UploadPackageRequest.new(chunk: archive.byteslice(start, CHUNK_BYTES))
        end
      end
    end
  end
end
