package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads, decodes, completes (defaults, ${NAME} expansion, path
// resolution) and validates the config file at path. A config problem is
// returned as an ErrorList naming the file, line and field of each problem.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse is Load for data already read; file names the source in errors and
// relative paths are resolved against its directory (the working directory
// when file is empty).
func Parse(data []byte, file string) (*Config, error) {
	src := &source{
		file:   file,
		yaml:   true,
		lines:  map[string]int{},
		set:    map[string]bool{},
		byLine: map[int]string{},
	}
	root, errs := src.parseDocument(data)
	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	w := &walker{src: src}
	w.walk(root, configType, "")
	if len(w.errs) > 0 {
		return nil, w.errs.sorted()
	}

	// The schema walk above already rejected unknown keys; the strict decode
	// stays as a second line of defence and converts scalars (durations, ints).
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, src.decodeErrors(err).sorted()
	}
	if file != "" {
		abs, err := filepath.Abs(file)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", file, err)
		}
		cfg.File = abs
	}
	if errs := check(cfg, src); len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// source is what the loader knows about the YAML text behind a Config.
type source struct {
	file   string
	yaml   bool            // false for a Config built in Go (see Validate)
	lines  map[string]int  // field path -> line of its key (or list item)
	set    map[string]bool // field paths given with a non-null value
	byLine map[int]string  // line -> path of the scalar value on it, for decoder errors
}

var (
	configType   = reflect.TypeFor[Config]()
	connectType  = reflect.TypeFor[Connect]()
	sshType      = reflect.TypeFor[SSH]()
	durationType = reflect.TypeFor[time.Duration]()
)

// parseDocument parses data into exactly one YAML document whose root is a mapping.
func (s *source) parseDocument(data []byte) (*yaml.Node, ErrorList) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{s.errAt(0, "", "file is empty: expected a mapping with temporal, storage, hosts and jobs")}
		}
		return nil, s.decodeErrors(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, s.decodeErrors(err)
	default:
		return nil, ErrorList{s.errAt(extra.Line, "", "only one YAML document is allowed (found a second one after ---)")}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	root = deref(root)
	if isNull(root) {
		return nil, ErrorList{s.errAt(root.Line, "", "file is empty: expected a mapping with temporal, storage, hosts and jobs")}
	}
	if root.Kind != yaml.MappingNode {
		return nil, ErrorList{s.errAt(root.Line, "", "top level must be a mapping with temporal, storage, hosts and jobs")}
	}
	return root, nil
}

func (s *source) errAt(line int, path, msg string) *Error {
	return &Error{File: s.file, Line: line, Path: path, Msg: msg}
}

var (
	lineMsgRE   = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unmarshalRE = regexp.MustCompile("^cannot unmarshal (\\S+)(?: `(.*)`)? into (.+)$")
)

// decodeErrors turns yaml.v3 errors ("line N: ...") into located Errors.
func (s *source) decodeErrors(err error) ErrorList {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var out ErrorList
	for _, m := range msgs {
		line, path := 0, ""
		if sm := lineMsgRE.FindStringSubmatch(m); sm != nil {
			line, _ = strconv.Atoi(sm[1])
			m = sm[2]
			path = s.byLine[line]
		}
		if um := unmarshalRE.FindStringSubmatch(m); um != nil {
			m = fmt.Sprintf("cannot use %s as %s", describeValue(um[1], um[2]), describeGoType(um[3]))
		}
		out = append(out, s.errAt(line, path, strings.TrimPrefix(m, "yaml: ")))
	}
	return out
}

func describeValue(tag, value string) string {
	switch tag {
	case "!!map":
		return "a mapping"
	case "!!seq":
		return "a list"
	}
	if value == "" {
		return tag
	}
	return strconv.Quote(value)
}

func describeGoType(t string) string {
	switch t {
	case "time.Duration":
		return "a duration (such as 30s, 5m, 1h30m)"
	case "int", "int64":
		return "an integer"
	case "bool":
		return "a boolean (true or false)"
	case "string":
		return "a string"
	}
	if strings.HasPrefix(t, "[]") {
		return "a list"
	}
	return "a mapping"
}

// walker checks the YAML node tree against the Go schema (unknown keys,
// duplicate keys, wrong kinds of node) and records the line of every field path.
type walker struct {
	src  *source
	errs ErrorList
}

func (w *walker) fail(line int, path, format string, args ...any) {
	w.errs = append(w.errs, w.src.errAt(line, path, fmt.Sprintf(format, args...)))
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode {
		w.src.byLine[n.Line] = path
	}
	if isNull(n) {
		return // null means "not given": defaults apply
	}
	w.src.set[path] = true
	if t == connectType {
		w.walkConnect(n, path)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		w.walk(n, t.Elem(), path)
	case reflect.Struct:
		if !w.wantKind(n, yaml.MappingNode, t, path) {
			return
		}
		fields := structFields(t)
		w.walkMapping(n, path, func(k *yaml.Node, child string) (reflect.Type, bool) {
			ft, ok := fields[k.Value]
			if !ok {
				w.fail(k.Line, child, "unknown key (known keys here: %s)", strings.Join(yamlFieldNames(t), ", "))
			}
			return ft, ok
		})
	case reflect.Map:
		if !w.wantKind(n, yaml.MappingNode, t, path) {
			return
		}
		w.walkMapping(n, path, func(*yaml.Node, string) (reflect.Type, bool) { return t.Elem(), true })
	case reflect.Slice:
		if !w.wantKind(n, yaml.SequenceNode, t, path) {
			return
		}
		for i, item := range n.Content {
			child := fmt.Sprintf("%s[%d]", path, i)
			w.src.lines[child] = item.Line
			w.walk(item, t.Elem(), child)
		}
	default:
		w.wantKind(n, yaml.ScalarNode, t, path)
	}
}

// walkMapping visits the key/value pairs of n, rejecting non-scalar, merge and
// duplicate keys; typeOf says which type a key's value has (false: skip it).
func (w *walker) walkMapping(n *yaml.Node, path string, typeOf func(k *yaml.Node, child string) (reflect.Type, bool)) {
	firstLine := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			w.fail(k.Line, path, "keys must be plain strings")
			continue
		}
		child := joinPath(path, k.Value)
		if k.Tag == "!!merge" || k.Value == "<<" {
			w.fail(k.Line, path, "merge keys (<<) are not supported; write the keys out")
			continue
		}
		if first, dup := firstLine[k.Value]; dup {
			w.fail(k.Line, child, "duplicate key (first given at line %d)", first)
			continue
		}
		firstLine[k.Value] = k.Line
		w.src.lines[child] = k.Line
		if vt, ok := typeOf(k, child); ok {
			w.walk(v, vt, child)
		}
	}
}

// walkConnect checks `local` or {ssh: {...}}.
func (w *walker) walkConnect(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value != "local" {
			w.fail(n.Line, path, "%s", connectScalarMsg(n.Value))
		}
	case yaml.MappingNode:
		found := false
		w.walkMapping(n, path, func(k *yaml.Node, child string) (reflect.Type, bool) {
			if k.Value != "ssh" {
				w.fail(k.Line, child, "unknown key: connect is `local` or a mapping {ssh: {...}}")
				return nil, false
			}
			found = true
			return sshType, true
		})
		if !found && len(n.Content) == 0 {
			w.fail(n.Line, path, "%s", connectKindMsg)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "ssh" && isNull(deref(n.Content[i+1])) {
				w.fail(n.Content[i].Line, joinPath(path, "ssh"), "must be a mapping with address, user, key and known_hosts")
			}
		}
	default:
		w.fail(n.Line, path, "%s", connectKindMsg)
	}
}

// wantKind reports a node of the wrong kind, e.g. a list where a mapping belongs.
func (w *walker) wantKind(n *yaml.Node, want yaml.Kind, t reflect.Type, path string) bool {
	if n.Kind == want {
		return true
	}
	w.fail(n.Line, path, "must be %s, not %s", describeType(t), describeKind(n.Kind))
	return false
}

func describeType(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration (such as 30s, 5m, 1h30m)"
	case t.Kind() == reflect.Struct, t.Kind() == reflect.Map:
		return "a mapping"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() == reflect.Int:
		return "an integer"
	}
	return "a string"
}

func describeKind(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// structFields maps the yaml key of each field of t to the field's type.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range t.Fields() {
		if name := yamlName(f); name != "" {
			out[name] = f.Type
		}
	}
	return out
}

// yamlFieldNames lists the yaml keys of t in declaration order.
func yamlFieldNames(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if name := yamlName(f); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// parentPath strips the last ".key" or "[i]" from a field path.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndex(p, "["); i >= 0 {
			return p[:i]
		}
	}
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i]
	}
	return ""
}

// deref follows alias nodes to what they point at.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}
