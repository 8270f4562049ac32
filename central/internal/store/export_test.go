package store

import "github.com/syndtr/goleveldb/leveldb/util"

func utilRangeAll() util.Range { return util.Range{} }
