package plans

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"

	yamlv2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// MaxCatalogueBytes bounds the size of a catalogue file.
const MaxCatalogueBytes = 1 << 20

// maxJSONDepth bounds the nesting of a catalogue document; a valid one
// nests three deep (file, plan, rate), so anything deeper is refused
// before it can cost stack.
const maxJSONDepth = 16

// catalogueFile is the one shape of a catalogue file: an object whose only
// key is "plans", a list of plans with the JSON field names of Plan:
//
//	{"plans": [{"name": "starter", "billing": "package", "fee_monthly_micros": 199000000, ...}]}
//
// or, in YAML:
//
//	plans:
//	  - name: starter
//	    billing: package
//	    fee_monthly_micros: 199000000
//
// An object rather than a bare list leaves room for file-level keys later.
type catalogueFile struct {
	Plans []Plan `json:"plans"`
}

// LoadCatalogue decodes a catalogue file (the shape of catalogueFile) from
// JSON or YAML: a document whose first character other than white space or
// a byte-order mark is '{' is JSON, anything else YAML (YAML is converted
// to JSON by sigs.k8s.io/yaml, so both use Plan's JSON names). YAML 1.1
// reads unquoted on/off/yes/no as booleans: quote such strings.
//
// Decoding is strict: an unknown key (compared exactly, case included), a
// key given twice, data after the document, a value of the wrong type, a
// file of more than MaxCatalogueBytes or MaxPlans plans, an empty list,
// duplicate plan names or an invalid plan is an error that names the key,
// the plan's index and the field. The plans are returned normalized (see
// Plan.Normalized) and sorted by name.
func LoadCatalogue(data []byte) ([]Plan, error) {
	c, err := ParseCatalogue(data)
	if err != nil {
		return nil, err
	}
	return c.plans, nil
}

// ReadCatalogue reads at most MaxCatalogueBytes from r and loads them as
// LoadCatalogue does; a longer input is an error.
func ReadCatalogue(r io.Reader) ([]Plan, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxCatalogueBytes+1))
	if err != nil {
		return nil, fmt.Errorf("catalogue: %w", err)
	}
	return LoadCatalogue(data)
}

// ParseCatalogue is LoadCatalogue returning a Catalogue.
func ParseCatalogue(data []byte) (*Catalogue, error) {
	if len(data) > MaxCatalogueBytes {
		return nil, fmt.Errorf("catalogue: more than %d bytes", MaxCatalogueBytes)
	}
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), " \t\r\n")
	js := trimmed
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return nil, errors.New(`catalogue: a bare list: want an object {"plans": [...]}`)
	}
	if len(trimmed) == 0 || trimmed[0] != '{' {
		var err error
		js, err = yaml.YAMLToJSONStrict(data)
		if err != nil {
			return nil, fmt.Errorf("catalogue (YAML): %w", err)
		}
		if err := oneYAMLDocument(data); err != nil {
			return nil, fmt.Errorf("catalogue (YAML): %w", err)
		}
	}
	var f catalogueFile
	if err := decodeStrictJSON(js, &f); err != nil {
		return nil, fmt.Errorf("catalogue: %w", err)
	}
	if len(f.Plans) == 0 {
		return nil, errors.New(`catalogue: no plans (want {"plans": [...]} with at least one plan)`)
	}
	c, err := NewCatalogue(f.Plans)
	if err != nil {
		return nil, fmt.Errorf("catalogue: %w", err)
	}
	return c, nil
}

// oneYAMLDocument refuses a YAML stream of more than one document (the
// conversion to JSON would silently read only the first).
func oneYAMLDocument(data []byte) error {
	dec := yamlv2.NewDecoder(bytes.NewReader(data))
	for n := 0; ; n++ {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return errors.New("more than one document (---)")
		}
	}
}

// decodeStrictJSON checks data's keys against v's type (see checkKeys) and
// decodes it with unknown fields disallowed and nothing allowed after it.
func decodeStrictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := checkKeys(dec, reflect.TypeOf(v).Elem(), "", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the end of the document")
	}
	dec = json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}

// checkKeys walks one JSON value of dec against type t and refuses object
// keys t has no field for (exactly, where encoding/json would match case
// insensitively), keys given twice, and nesting deeper than maxJSONDepth.
// Where the JSON does not match t's kind it checks nothing further and
// leaves the type error to the decoder.
func checkKeys(dec *json.Decoder, t reflect.Type, path string, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("%s: nested too deep", where(path))
	}
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%s: %w", where(path), eof(err))
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch d {
	case '{':
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		}
		seen := make(map[string]bool)
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%s: %w", where(path), eof(err))
			}
			key, _ := kt.(string)
			if seen[key] {
				return fmt.Errorf("%s: key %q given twice", where(path), key)
			}
			seen[key] = true
			var ft reflect.Type
			if fields != nil {
				var known bool
				if ft, known = fields[key]; !known {
					return fmt.Errorf("%s: unknown key %q (known: %s)", where(path), key, knownKeys(fields))
				}
			}
			if err := checkKeys(dec, ft, join(path, key), depth+1); err != nil {
				return err
			}
		}
	case '[':
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkKeys(dec, et, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return fmt.Errorf("%s: %w", where(path), eof(err))
	}
	return nil
}

// jsonFields maps the JSON names of struct type t's exported fields to
// their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	return m
}

func knownKeys(fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// eof words a premature end of the document.
func eof(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func where(path string) string {
	if path == "" {
		return "document"
	}
	return path
}
