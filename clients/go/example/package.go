package main

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"

	capstanv1 "github.com/capstan/capstan/clients/go/capstan/v1"
)

// greeterSource is the Python code this program deploys. It exists only on
// the caller's side: the control plane gets it as an uploaded package.
const greeterSource = `"""Written by Capstan's Go example and shipped as a package."""


class Greeter:
    def greet(self, name, punct="!"):
        return f"Hello, {name}{punct}"

    def count(self, n):
        """A streaming method: DataPlaneService.CallStream, one item per yield."""
        for i in range(n):
            yield {"i": i, "square": i * i}

    async def __call__(self, request):
        """HTTP: the proxy passes a Starlette Request; a dict answers as JSON."""
        name = request.query_params.get("name", "world")
        return {"greeting": self.greet(name), "path": request.url.path}
`

// chunkBytes is how much of the archive one upload message carries (the
// protos advise at most 1 MiB).
const chunkBytes = 256 << 10

// writeProject writes the user's folder: one Python module.
func writeProject(dir string) error {
	return os.WriteFile(filepath.Join(dir, "greeter.py"), []byte(greeterSource), 0o644)
}

// zipFolder packs every file under dir, with paths relative to dir as the
// package format requires.
func zipFolder(dir string) ([]byte, error) {
	var archive bytes.Buffer
	writer := zip.NewWriter(&archive)
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || entry.IsDir() {
			return err
		}
		relative, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		content, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		file, err := writer.Create(filepath.ToSlash(relative))
		if err != nil {
			return err
		}
		_, err = file.Write(content)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := writer.Close(); err != nil {
		return nil, err
	}
	return archive.Bytes(), nil
}

// upload sends the archive through PackageService.UploadPackage: the
// metadata first, then the bytes in chunks. The package's name is the
// archive's sha256, so uploading the same folder again stores nothing new.
func upload(ctx context.Context, packages capstanv1.PackageServiceClient, archive []byte) (*capstanv1.UploadPackageResponse, error) {
	digest := sha256.Sum256(archive)
	stream, err := packages.UploadPackage(ctx)
	if err != nil {
		return nil, err
	}
	metadata := &capstanv1.PackageMetadata{
		Sha256:    hex.EncodeToString(digest[:]),
		SizeBytes: int64(len(archive)),
		Format:    capstanv1.PackageFormat_PACKAGE_FORMAT_ZIP,
	}
	first := &capstanv1.UploadPackageRequest{Part: &capstanv1.UploadPackageRequest_Metadata{Metadata: metadata}}
	if err := stream.Send(first); err != nil {
		return nil, err
	}
	for start := 0; start < len(archive); start += chunkBytes {
		end := start + chunkBytes
		if end > len(archive) {
			end = len(archive)
		}
		chunk := &capstanv1.UploadPackageRequest{Part: &capstanv1.UploadPackageRequest_Chunk{Chunk: archive[start:end]}}
		if err := stream.Send(chunk); err != nil {
			break // the server answered early (e.g. already stored): CloseAndRecv says how
		}
	}
	return stream.CloseAndRecv()
}
