package main

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"
)

// violation is one google.rpc.BadRequest field violation.
type violation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

// richError is what a program reads from a Capstan error status, without
// parsing its message: the code, the google.rpc.ErrorInfo (reason, domain
// "capstan.v1", metadata) and, for a bad request, the fields to fix (in the
// protos' names, e.g. replica_options.num_cpus).
type richError struct {
	Code            string            `json:"code"`
	Message         string            `json:"message"`
	Reason          string            `json:"reason"`
	Domain          string            `json:"domain"`
	Metadata        map[string]string `json:"metadata"`
	FieldViolations []violation       `json:"field_violations"`
}

// readError unpacks the status details Capstan sends with an error.
func readError(err error) richError {
	st := status.Convert(err)
	read := richError{Code: st.Code().String(), Message: st.Message(), FieldViolations: []violation{}}
	for _, detail := range st.Details() {
		switch detail := detail.(type) {
		case *errdetails.ErrorInfo:
			read.Reason, read.Domain, read.Metadata = detail.Reason, detail.Domain, detail.Metadata
		case *errdetails.BadRequest:
			for _, v := range detail.FieldViolations {
				read.FieldViolations = append(read.FieldViolations, violation{v.Field, v.Description})
			}
		}
	}
	return read
}
