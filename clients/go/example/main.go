// Command example deploys Python code from Go, with no Python on the
// caller's side: it writes a folder holding greeter.py, uploads it as a
// package, deploys it, calls it through the DataPlane and over HTTP, scales
// it, reads a structured error and deletes it. It prints what it saw as one
// JSON object.
//
//	go run ./example -control 127.0.0.1:50051 -dataplane 127.0.0.1:9000 -http http://127.0.0.1:8000
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	capstanv1 "github.com/capstan/capstan/clients/go/capstan/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// report is what the tour saw, printed as JSON at the end.
type report struct {
	PackageURI     string        `json:"package_uri"`
	AlreadyStored  bool          `json:"already_stored"`
	AppliedState   string        `json:"applied_state"`
	Result         interface{}   `json:"result"`
	Stream         []interface{} `json:"stream"`
	HTTP           interface{}   `json:"http"`
	ScaledReplicas int           `json:"scaled_replicas"`
	Invalid        richError     `json:"invalid"`
	AfterDelete    string        `json:"after_delete"`
}

func main() {
	control := flag.String("control", "127.0.0.1:50051", "the control plane's gRPC address")
	dataplane := flag.String("dataplane", "127.0.0.1:9000", "the proxy's gRPC address (DataPlaneService)")
	httpURL := flag.String("http", "http://127.0.0.1:8000", "the proxy's HTTP URL")
	name := flag.String("name", "go_greeter", "the deployment's name")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	seen, err := tour(ctx, *control, *dataplane, *httpURL, *name)
	if err != nil {
		log.Fatal(err)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	if err := out.Encode(seen); err != nil {
		log.Fatal(err)
	}
}

func tour(ctx context.Context, control, dataplane, httpURL, name string) (*report, error) {
	// Plaintext, as on loopback. (grpc.WithInsecure: Debian's grpc 1.33
	// predates credentials/insecure.)
	controlConn, err := grpc.DialContext(ctx, control, grpc.WithInsecure())
	if err != nil {
		return nil, err
	}
	defer controlConn.Close()
	dataConn, err := grpc.DialContext(ctx, dataplane, grpc.WithInsecure())
	if err != nil {
		return nil, err
	}
	defer dataConn.Close()
	plane := capstanv1.NewControlPlaneServiceClient(controlConn)
	calls := capstanv1.NewDataPlaneServiceClient(dataConn)
	seen := &report{}

	pkg, err := shipProject(ctx, capstanv1.NewPackageServiceClient(controlConn))
	if err != nil {
		return nil, fmt.Errorf("uploading the package: %w", err)
	}
	seen.PackageURI, seen.AlreadyStored = pkg.Package.Uri, pkg.AlreadyStored

	spec := greeterSpec(name, pkg.Package.Uri)
	applied, err := plane.ApplyDeployment(ctx, &capstanv1.ApplyDeploymentRequest{Spec: spec, Wait: true, TimeoutS: 90})
	if err != nil {
		return nil, fmt.Errorf("applying %s: %w", name, err)
	}
	seen.AppliedState = applied.Deployment.State.String()

	if seen.Result, err = greet(ctx, calls, name); err != nil {
		return nil, fmt.Errorf("calling greet: %w", err)
	}
	if seen.Stream, err = count(ctx, calls, name, 3); err != nil {
		return nil, fmt.Errorf("calling count: %w", err)
	}
	if seen.HTTP, err = getJSON(ctx, httpURL+spec.GetRoutePrefix()+"?name=Grace"); err != nil {
		return nil, fmt.Errorf("calling over HTTP: %w", err)
	}

	scaled, err := plane.ScaleDeployment(ctx, &capstanv1.ScaleDeploymentRequest{Name: name, NumReplicas: 2, Wait: true, TimeoutS: 90})
	if err != nil {
		return nil, fmt.Errorf("scaling %s: %w", name, err)
	}
	seen.ScaledReplicas = running(scaled.Deployment)

	// A spec the control plane refuses: the error says which field, in data.
	bad := proto.Clone(spec).(*capstanv1.DeploymentSpec)
	bad.ReplicaOptions.NumCpus = proto.Float64(-1)
	_, err = plane.ApplyDeployment(ctx, &capstanv1.ApplyDeploymentRequest{Spec: bad})
	seen.Invalid = readError(err)

	if _, err := plane.DeleteDeployment(ctx, &capstanv1.DeleteDeploymentRequest{Name: name, Wait: true}); err != nil {
		return nil, fmt.Errorf("deleting %s: %w", name, err)
	}
	_, err = plane.GetDeployment(ctx, &capstanv1.GetDeploymentRequest{Name: name})
	seen.AfterDelete = status.Code(err).String()
	return seen, nil
}

// shipProject writes the user's folder to a temporary place, zips it and
// uploads it.
func shipProject(ctx context.Context, packages capstanv1.PackageServiceClient) (*capstanv1.UploadPackageResponse, error) {
	dir, err := os.MkdirTemp("", "capstan-go-project-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := writeProject(dir); err != nil {
		return nil, err
	}
	archive, err := zipFolder(dir)
	if err != nil {
		return nil, err
	}
	return upload(ctx, packages, archive)
}

// greeterSpec deploys greeter:Greeter from the uploaded package.
func greeterSpec(name, packageURI string) *capstanv1.DeploymentSpec {
	return &capstanv1.DeploymentSpec{
		Name:        name,
		RoutePrefix: proto.String("/" + name),
		Code:        &capstanv1.Code{Source: &capstanv1.Code_ImportPath{ImportPath: "greeter:Greeter"}},
		ReplicaOptions: &capstanv1.ReplicaOptions{
			NumCpus:    proto.Float64(0.5),
			RuntimeEnv: &capstanv1.RuntimeEnv{WorkingDir: packageURI},
		},
		GracefulShutdownWaitLoopS: proto.Float64(0.1),
	}
}

// greet calls Greeter.greet("Ada", punct="?"): arguments and result are
// JSON values (google.protobuf.ListValue, Struct and Value).
func greet(ctx context.Context, calls capstanv1.DataPlaneServiceClient, name string) (interface{}, error) {
	args, err := structpb.NewList([]interface{}{"Ada"})
	if err != nil {
		return nil, err
	}
	kwargs, err := structpb.NewStruct(map[string]interface{}{"punct": "?"})
	if err != nil {
		return nil, err
	}
	arguments := &capstanv1.Arguments{Args: args, Kwargs: kwargs}
	answer, err := calls.Call(ctx, &capstanv1.CallRequest{Deployment: name, MethodName: "greet", Arguments: arguments})
	if err != nil {
		return nil, err
	}
	return answer.Result.AsInterface(), nil
}

// count calls the streaming method Greeter.count(n) and collects its items.
func count(ctx context.Context, calls capstanv1.DataPlaneServiceClient, name string, n float64) ([]interface{}, error) {
	args, err := structpb.NewList([]interface{}{n})
	if err != nil {
		return nil, err
	}
	request := &capstanv1.CallStreamRequest{Deployment: name, MethodName: "count", Arguments: &capstanv1.Arguments{Args: args}}
	stream, err := calls.CallStream(ctx, request)
	if err != nil {
		return nil, err
	}
	items := []interface{}{}
	for {
		item, err := stream.Recv()
		if err == io.EOF {
			return items, nil
		}
		if err != nil {
			return nil, err
		}
		items = append(items, item.Item.AsInterface())
	}
}

// getJSON GETs url and decodes its JSON answer. The proxy learns a new
// route a moment after the apply returns, so a 404 is retried until ctx ends.
func getJSON(ctx context.Context, url string) (interface{}, error) {
	for {
		request, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		response, err := http.DefaultClient.Do(request)
		if err != nil {
			return nil, err
		}
		var answer interface{}
		err = json.NewDecoder(response.Body).Decode(&answer)
		response.Body.Close()
		if response.StatusCode != http.StatusNotFound {
			if response.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET %s: %s", url, response.Status)
			}
			return answer, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("GET %s: still 404 when %w", url, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// running counts a deployment's replicas that serve.
func running(deployment *capstanv1.Deployment) int {
	n := 0
	for _, replica := range deployment.Replicas {
		if replica.State == capstanv1.ReplicaState_REPLICA_STATE_RUNNING {
			n++
		}
	}
	return n
}
