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
    def self.tar_gz(folder)
      buffer = StringIO.new(+'', 'wb')
      gzip = Zlib::GzipWriter.new(buffer)
      Gem::Package::TarWriter.new(gzip) do |tar|
        Dir.glob('**/*', base: folder).sort.each do |name|
          path = File.join(folder, name)
          next unless File.file?(path)

          tar.add_file_simple(name, 0o644, File.size(path)) { |io| io.write(File.binread(path)) }
        end
      end
      gzip.finish
      buffer.string
    end

    # Uploads an archive and returns the stored Capstan::V1::Package. The
    # metadata goes first, then the bytes in chunks: the call is client
    # streaming, so the stub takes an enumerator of requests.
    def self.upload(stub, archive, format: :PACKAGE_FORMAT_TAR_GZ)
      metadata = Capstan::V1::PackageMetadata.new(
        sha256: Digest::SHA256.hexdigest(archive), size_bytes: archive.bytesize, format: format
      )
      requests = Enumerator.new do |out|
        out << Capstan::V1::UploadPackageRequest.new(metadata: metadata)
        (0...archive.bytesize).step(CHUNK_BYTES) do |start|
          out << Capstan::V1::UploadPackageRequest.new(chunk: archive.byteslice(start, CHUNK_BYTES))
        end
      end
      stub.upload_package(requests).package
    end
  end
end
