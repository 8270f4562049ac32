package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/kache-planner/kache-planner/shared/cargolock"
)

// ErrGit marks a git command that failed.
var ErrGit = errors.New("git")

// TraceFromGit writes the history of ref in a local git checkout as a trace
// directory (commits.jsonl and locks/): every commit reachable from ref that
// has a Cargo.lock at the repository root, parents first, with the tree hash
// of each workspace member's directory. It returns the number of commits
// written. It only reads the repository, through the git command.
func TraceFromGit(repo, out, ref string) (int, error) {
	g := gitRepo{dir: repo}
	tip, err := g.output("rev-parse", "--verify", ref+"^{commit}")
	if err != nil {
		return 0, err
	}
	tip = strings.TrimSpace(tip)
	fpList, err := g.output("rev-list", "--first-parent", tip)
	if err != nil {
		return 0, err
	}
	firstParent := map[string]bool{}
	for _, sha := range strings.Fields(fpList) {
		firstParent[sha] = true
	}
	log, err := g.output("log", "--topo-order", "--reverse", "--format=%H%x00%P%x00%ct%x00%T", tip)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(out, "locks"), 0o755); err != nil {
		return 0, fmt.Errorf("create trace dir: %w", err)
	}
	cat, err := g.catFile()
	if err != nil {
		return 0, err
	}
	defer cat.close()
	w := &traceWriter{git: g, cat: cat, out: out, locks: map[string][]string{}, names: map[string]string{}}
	f, err := os.Create(filepath.Join(out, "commits.jsonl"))
	if err != nil {
		return 0, fmt.Errorf("create commits.jsonl: %w", err)
	}
	bw := bufio.NewWriter(f)
	n, err := w.writeCommits(bw, log, firstParent)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write commits.jsonl: %w", cerr)
	}
	return n, err
}

// traceWriter converts commits one by one, caching what repeats across
// commits: parsed lock files and Cargo.toml package names by blob sha.
type traceWriter struct {
	git gitRepo
	cat *catFile
	out string
	// locks maps a lock blob to its source-less package names.
	locks map[string][]string
	// names maps a Cargo.toml blob to its package name ("" if none).
	names map[string]string
}

func (w *traceWriter) writeCommits(out io.Writer, log string, firstParent map[string]bool) (int, error) {
	enc := json.NewEncoder(out)
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if line == "" {
			continue
		}
		fields := strings.Split(line, "\x00")
		if len(fields) != 4 {
			return n, fmt.Errorf("%w: unexpected log line %q", ErrGit, line)
		}
		sha, root := fields[0], fields[3]
		t, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil {
			return n, fmt.Errorf("%w: commit time of %s: %w", ErrGit, sha, err)
		}
		lock, content, ok, err := w.cat.read(sha + ":Cargo.lock")
		if err != nil {
			return n, err
		}
		if !ok || lock.typ != "blob" {
			continue
		}
		memberNames, err := w.lockMembers(lock.sha, content)
		if err != nil {
			return n, err
		}
		members, err := w.members(sha, root, memberNames)
		if err != nil {
			return n, err
		}
		c := Commit{Commit: sha, Parents: strings.Fields(fields[1]), Time: t, FirstParent: firstParent[sha], Lock: lock.sha, Members: members}
		if c.Parents == nil {
			c.Parents = []string{}
		}
		if err := enc.Encode(&c); err != nil {
			return n, fmt.Errorf("write commits.jsonl: %w", err)
		}
		n++
	}
	return n, nil
}

// lockMembers stores a lock file once and returns its source-less packages.
// A lock file that does not parse has no members but is still written.
func (w *traceWriter) lockMembers(blob string, content []byte) ([]string, error) {
	if names, ok := w.locks[blob]; ok {
		return names, nil
	}
	if err := os.WriteFile(filepath.Join(w.out, "locks", blob+".lock"), content, 0o644); err != nil {
		return nil, fmt.Errorf("write lock file: %w", err)
	}
	var names []string
	if l, err := cargolock.Parse(bytes.NewReader(content)); err == nil {
		for _, p := range l.Members() {
			names = append(names, p.Name)
		}
	}
	w.locks[blob] = names
	return names, nil
}

// members maps each member package to the tree hash of the directory
// holding the Cargo.toml that declares it (the root tree for the root
// package). When several manifests declare the name, the shallowest wins.
func (w *traceWriter) members(commit, root string, names []string) (map[string]string, error) {
	out := map[string]string{}
	if len(names) == 0 {
		return out, nil
	}
	listing, err := w.git.output("ls-tree", "-r", "-t", "-z", "--full-tree", commit)
	if err != nil {
		return nil, err
	}
	trees := map[string]string{"": root}
	type manifest struct{ dir, blob string }
	var manifests []manifest
	for _, entry := range strings.Split(listing, "\x00") {
		meta, p, ok := strings.Cut(entry, "\t")
		if !ok {
			continue
		}
		f := strings.Fields(meta)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[1] == "tree":
			trees[p] = f[2]
		case f[1] == "blob" && path.Base(p) == "Cargo.toml":
			dir := path.Dir(p)
			if dir == "." {
				dir = ""
			}
			manifests = append(manifests, manifest{dir: dir, blob: f[2]})
		}
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	best := map[string]string{}
	for _, m := range manifests {
		name, err := w.packageName(m.blob)
		if err != nil {
			return nil, err
		}
		if !want[name] {
			continue
		}
		if d, ok := best[name]; !ok || depth(m.dir) < depth(d) || depth(m.dir) == depth(d) && m.dir < d {
			best[name] = m.dir
		}
	}
	for name, dir := range best {
		if sha, ok := trees[dir]; ok {
			out[name] = sha
		}
	}
	return out, nil
}

func depth(dir string) int {
	if dir == "" {
		return 0
	}
	return strings.Count(dir, "/") + 1
}

// packageName reads [package] name from a Cargo.toml blob; a manifest
// without one (a virtual workspace) or that does not parse names nothing.
func (w *traceWriter) packageName(blob string) (string, error) {
	if n, ok := w.names[blob]; ok {
		return n, nil
	}
	_, content, ok, err := w.cat.read(blob)
	if err != nil {
		return "", err
	}
	var m struct {
		Package struct {
			Name string `toml:"name"`
		} `toml:"package"`
	}
	name := ""
	if ok {
		if _, err := toml.Decode(string(content), &m); err == nil {
			name = m.Package.Name
		}
	}
	w.names[blob] = name
	return name, nil
}

// gitRepo runs git in a repository.
type gitRepo struct{ dir string }

func (g gitRepo) command(args ...string) *exec.Cmd {
	cmd := exec.Command("git", append([]string{"-C", g.dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
	return cmd
}

func (g gitRepo) output(args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := g.command(args...)
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%w %s: %w: %s", ErrGit, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return string(b), nil
}

// catFile is one `git cat-file --batch` process: a request per object
// instead of a process per object.
type catFile struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

type objectHeader struct{ sha, typ string }

func (g gitRepo) catFile() (*catFile, error) {
	cmd := g.command("cat-file", "--batch")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("%w cat-file: %w", ErrGit, err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%w cat-file: %w", ErrGit, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w cat-file: %w", ErrGit, err)
	}
	return &catFile{cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<16)}, nil
}

// read returns an object by name (a sha or "<commit>:<path>"); ok is false
// when it does not exist.
func (c *catFile) read(name string) (objectHeader, []byte, bool, error) {
	if _, err := io.WriteString(c.in, name+"\n"); err != nil {
		return objectHeader{}, nil, false, fmt.Errorf("%w cat-file: %w", ErrGit, err)
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		return objectHeader{}, nil, false, fmt.Errorf("%w cat-file: %w", ErrGit, err)
	}
	f := strings.Fields(line)
	if len(f) == 2 && f[1] == "missing" || len(f) != 3 {
		return objectHeader{}, nil, false, nil
	}
	size, err := strconv.Atoi(f[2])
	if err != nil {
		return objectHeader{}, nil, false, fmt.Errorf("%w cat-file: header %q", ErrGit, line)
	}
	buf := make([]byte, size+1) // content and a trailing newline
	if _, err := io.ReadFull(c.out, buf); err != nil {
		return objectHeader{}, nil, false, fmt.Errorf("%w cat-file: %w", ErrGit, err)
	}
	return objectHeader{sha: f[0], typ: f[1]}, buf[:size], true, nil
}

func (c *catFile) close() {
	c.in.Close()
	c.cmd.Wait()
}
