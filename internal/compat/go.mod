module github.com/redisalive/redisalive/internal/compat

go 1.26.8

require (
	github.com/go-redsync/redsync/v4 v4.18.1
	github.com/redisalive/redisalive v0.0.0-00010101000000-000000000000
	github.com/stretchr/testify v1.12.1
)

require (
	github.com/gomodule/redigo v1.9.3 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/redisalive/redisalive => ../..
