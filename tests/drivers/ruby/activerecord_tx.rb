# ActiveRecord scenario for tests/it/drivers_in_transaction.rs: Rails' PreparedStatementCacheExpired.
#
#   ruby tests/drivers/ruby/activerecord_tx.rb
#
# ActiveRecord's PostgreSQL adapter (ruby-pg underneath) with prepared_statements: true caches
# one server-side statement per SQL text and runs it with PQexecPrepared (Bind/Describe
# P/Execute/Sync). On "cached plan must not change result type" outside a transaction Rails
# drops the statement and retries; inside a transaction it cannot, and raises
# ActiveRecord::PreparedStatementCacheExpired (the transaction is aborted).
#
# Connects to PGHOST/PGPORT/PGDATABASE as PGUSER/PGPASSWORD (from the environment).
#
# 1. `Order.transaction do`: a model query `Order.find(1)` (SQL
#    `SELECT "orders".* FROM "orders" WHERE "orders"."id" = $1 LIMIT $2`) and a cached
#    `INSERT ... RETURNING *` (exec_query with prepare: true) for id 3; commit;
# 2. print READY and wait for "go" on stdin while the test migrates the table;
# 3. `Order.transaction do`: `Order.find(1)` and the cached insert for id 4; commit.
#
# Columns are reported as the driver received them (field names and type OIDs of the PG::Result
# that PQexecPrepared returned, recorded by a wrapper around PG::Connection#exec_prepared); the
# select's row is the model's attributes (a fourth column would show up there as a fourth
# attribute). Prints the transcript described in tests/it/drivers_in_transaction.rs; the Rust test
# judges it.

require "bigdecimal"
require "pg"
require "active_record"

INSERT = "INSERT INTO orders (id, total, note) VALUES ($1, $2, $3) RETURNING *"

TYPE_NAMES = { 23 => "int4", 1700 => "numeric", 25 => "text", 1043 => "varchar" }.freeze

# The shape of the last result PQexecPrepared returned: what ActiveRecord decodes with.
module RecordShape
  class << self
    attr_accessor :last
  end

  def exec_prepared(*args, &block)
    result = super
    RecordShape.last = result.fields.each_with_index.map do |name, i|
      "#{name}:#{TYPE_NAMES.fetch(result.ftype(i)) { result.ftype(i).to_s }}"
    end.join(",")
    result
  end
end
PG::Connection.prepend(RecordShape)

def env(name, fallback)
  v = ENV[name]
  v.nil? || v.empty? ? fallback : v
end

ActiveRecord::Base.establish_connection(
  adapter: "postgresql",
  host: env("PGHOST", "127.0.0.1"),
  port: Integer(env("PGPORT", "5432")),
  username: env("PGUSER", "postgres"),
  password: env("PGPASSWORD", ""),
  database: env("PGDATABASE", "postgres"),
  sslmode: "disable",
  prepared_statements: true,
  # Rails' advisory locks are for migrations; none here.
  advisory_locks: false
)

class Order < ActiveRecord::Base
  self.table_name = "orders"
end

def fmt(v)
  case v
  when nil then "NULL"
  when BigDecimal then v.to_s("F")
  else v.to_s
  end
end

# The PG::Error underneath an ActiveRecord exception (StatementInvalid wraps it; Rails'
# PreparedStatementCacheExpired wraps the StatementInvalid).
def pg_error(e)
  while e
    return e if e.is_a?(PG::Error) && e.respond_to?(:result) && e.result
    e = e.cause
  end
  nil
end

# Runs one step, prints what the driver decoded; prints and re-raises an error.
def step(label)
  RecordShape.last = nil
  rows = yield
  puts "#{label}: columns=#{RecordShape.last}"
  puts "#{label}: rows=#{rows.length}"
  rows.each { |r| puts "#{label}: row=#{r.map { |v| fmt(v) }.join('|')}" }
  $stdout.flush
rescue ActiveRecord::StatementInvalid => e
  pg = pg_error(e)
  raise unless pg
  r = pg.result
  puts "#{label}: error=#{r.error_field(PG::PG_DIAG_SQLSTATE)} " \
       "#{r.error_field(PG::PG_DIAG_MESSAGE_PRIMARY)} " \
       "routine=#{r.error_field(PG::PG_DIAG_SOURCE_FUNCTION)}"
  $stdout.flush
  raise
end

def find(label, id)
  step(label) { [Order.find(id).attributes.values] }
end

def insert(label, id, total, note)
  binds = [
    ActiveRecord::Relation::QueryAttribute.new("id", id, Order.type_for_attribute("id")),
    ActiveRecord::Relation::QueryAttribute.new("total", total, Order.type_for_attribute("total")),
    ActiveRecord::Relation::QueryAttribute.new("note", note, Order.type_for_attribute("note")),
  ]
  step(label) { Order.connection.exec_query(INSERT, "Order Create", binds, prepare: true).rows }
end

def transaction(phase)
  Order.transaction { yield }
  puts "#{phase}: committed"
rescue ActiveRecord::StatementInvalid => e
  raise unless pg_error(e)
  puts "info: #{phase} raised #{e.class}"
  puts "#{phase}: rolled back"
ensure
  $stdout.flush
end

puts "driver: activerecord #{ActiveRecord.version} (ruby-pg #{PG::VERSION}, ruby #{RUBY_VERSION})"
transaction("before") do
  find("before select 1", 1)
  insert("before insert 3", 3, BigDecimal("30.25"), "third")
end
puts "READY"
$stdout.flush
line = $stdin.gets
abort "expected 'go' on stdin, got #{line.inspect}" unless line&.strip == "go"
transaction("after") do
  find("after select 1", 1)
  insert("after insert 4", 4, BigDecimal("40.75"), "fourth")
end
ActiveRecord::Base.connection_pool.disconnect!
puts "DONE"
$stdout.flush
