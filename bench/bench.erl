%% bench/bench.erl -- the Erlang/OTP side of `make bench`.
%%
%% The same workloads as bench/run.lua, on gen_server and plain processes.
%% Run one workload per VM (bench/compare.lua does this):
%%
%%   erlc -o /tmp bench/bench.erl
%%   erl -noshell +P 2000000 -pa /tmp -run bench main cast [N ...]
%%
%% Prints one line `RESULT workload=NAME key=value ...` and halts with 0, or
%% `ERROR workload=NAME reason` and halts with 1. Every wait has a time-out.
%%
%% This module is also the gen_server callback module used by the workloads.

-module(bench).
-behaviour(gen_server).

-export([main/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% a whole workload must finish within this time (ms)
-define(WORKLOAD_TIMEOUT, 240000).
%% any single receive inside a workload (ms)
-define(T, 60000).

%% ------------------------------------------------------------- gen_server

init(Arg) -> {ok, Arg}.

handle_call(get, _From, S) -> {reply, S, S};
handle_call(ping, _From, S) -> {reply, pong, S}.

handle_cast({inc, N, _Meta}, S) -> {noreply, S + N}.

handle_info(_Msg, S) -> {noreply, S}.

%% ------------------------------------------------------------------ main

main([W | Args]) ->
    Name = list_to_atom(W),
    Ns = [list_to_integer(A) || A <- Args],
    Self = self(),
    {Pid, Ref} = spawn_monitor(fun() -> Self ! {bench_result, self(), run(Name, Ns)} end),
    receive
        {bench_result, Pid, Fields} ->
            io:format("RESULT workload=~s~s~n", [W, fields(Fields)]),
            halt(0);
        {'DOWN', Ref, process, Pid, Reason} ->
            io:format("ERROR workload=~s crashed: ~0p~n", [W, Reason]),
            halt(1)
    after ?WORKLOAD_TIMEOUT ->
        io:format("ERROR workload=~s timeout after ~p ms~n", [W, ?WORKLOAD_TIMEOUT]),
        halt(1)
    end.

fields(Fields) ->
    lists:flatten([io_lib:format(" ~s=~s", [K, val(V)]) || {K, V} <- Fields]).

val(V) when is_float(V) -> float_to_list(V, [{decimals, 4}, compact]);
val(V) when is_integer(V) -> integer_to_list(V);
val(V) when is_atom(V) -> atom_to_list(V);
val(V) -> V.

now_s() -> erlang:monotonic_time(nanosecond) / 1.0e9.

%% resident memory of this OS process, bytes (VmRSS, as run.lua reads it)
rss() ->
    {ok, B} = file:read_file("/proc/self/status"),
    {match, [Kb]} = re:run(B, "VmRSS:\\s+(\\d+)\\s+kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

wait(Tag) ->
    receive {Tag, V} -> V after ?T -> exit({timeout, Tag}) end.

arg(Ns, Default) -> case Ns of [N | _] -> N; [] -> Default end.
arg2(Ns, Default) -> case Ns of [_, N | _] -> N; _ -> Default end.

%% ------------------------------------------------------------- workloads

%% cast throughput: one sender, one server, N casts then a call for the count
run(cast, Ns) ->
    N = arg(Ns, 1000000),
    {ok, Srv} = gen_server:start(bench, 0, []),
    Msg = {inc, 1, #{user => <<"alice">>, n => 7}},
    T0 = now_s(),
    cast_loop(Srv, Msg, N),
    Count = gen_server:call(Srv, get, ?T),
    T1 = now_s(),
    Count =:= N orelse exit({wrong_count, Count, N}),
    [{value, N / (T1 - T0)}, {unit, 'casts/s'}, {n, N}];

%% call round trip from a (spawned) process
run(call, Ns) ->
    N = arg(Ns, 200000),
    {ok, Srv} = gen_server:start(bench, 0, []),
    pong = gen_server:call(Srv, ping),
    T0 = now_s(),
    call_loop(Srv, N),
    T1 = now_s(),
    [{value, (T1 - T0) / N * 1.0e6}, {unit, us}, {n, N}];

%% C client processes x M calls each to one server
run(clients, Ns) ->
    C = arg(Ns, 100),
    M = arg2(Ns, 2000),
    {ok, Srv} = gen_server:start(bench, 0, []),
    Self = self(),
    Pids = [spawn_link(fun() ->
                           receive go -> ok after ?T -> exit(no_go) end,
                           call_loop(Srv, M),
                           Self ! {client_done, self()}
                       end) || _ <- lists:seq(1, C)],
    T0 = now_s(),
    [P ! go || P <- Pids],
    [receive {client_done, P} -> ok after ?T -> exit(client_timeout) end || P <- Pids],
    T1 = now_s(),
    [{value, C * M / (T1 - T0)}, {unit, 'calls/s'}, {n, C * M}];

%% start rate and resident memory per idle server
run(start, Ns) ->
    N = arg(Ns, 100000),
    garbage_collect(),
    R0 = rss(),
    T0 = now_s(),
    start_loop(N),
    T1 = now_s(),
    timer:sleep(200),
    R1 = rss(),
    [{value, N / (T1 - T0)}, {unit, 'starts/s'}, {mem, (R1 - R0) / N},
     {mem_unit, 'bytes/server'}, {rss, R1}, {n, N}];

%% Savina ping-pong: N round trips between two processes
run(pingpong, Ns) ->
    N = arg(Ns, 200000),
    Pong = spawn_link(fun pong/0),
    T0 = now_s(),
    ping(Pong, N),
    T1 = now_s(),
    Pong ! stop,
    [{value, N / (T1 - T0)}, {unit, 'roundtrips/s'}, {n, N}];

%% Savina counting: N messages to a counter, then ask for the count
run(counting, Ns) ->
    N = arg(Ns, 1000000),
    Counter = spawn_link(fun() -> counter(0) end),
    T0 = now_s(),
    count_loop(Counter, N),
    Counter ! {get, self()},
    Count = wait(count),
    T1 = now_s(),
    Count =:= N orelse exit({wrong_count, Count, N}),
    [{value, N / (T1 - T0)}, {unit, 'msgs/s'}, {n, N}];

%% Savina thread ring: P processes, H hops of one token
run(threadring, Ns) ->
    P = arg(Ns, 100),
    H = arg2(Ns, 1000000),
    Self = self(),
    Pids = [spawn_link(fun() -> ring_start(Self) end) || _ <- lists:seq(1, P)],
    Nexts = tl(Pids) ++ [hd(Pids)],
    [Pid ! {next, Next} || {Pid, Next} <- lists:zip(Pids, Nexts)],
    T0 = now_s(),
    hd(Pids) ! H,
    ring_done = receive ring_done -> ring_done after ?T -> exit(ring_timeout) end,
    T1 = now_s(),
    [Pid ! stop || Pid <- Pids],
    [{value, H / (T1 - T0)}, {unit, 'hops/s'}, {n, H}];

%% Savina fork-join (creation): spawn N processes, each sends one message back
run(forkjoin, Ns) ->
    N = arg(Ns, 100000),
    %% Up to N `done` messages pile up while this process is still spawning:
    %% with the default on-heap message queue every GC of this process copies
    %% them, and the workload goes superlinear (100k: ~2-3 s instead of ~0.25 s
    %% on OTP 25). off_heap is the standard remedy; the other workloads keep
    %% the default, which is faster for them.
    process_flag(message_queue_data, off_heap),
    Self = self(),
    T0 = now_s(),
    fork_loop(Self, N),
    join_loop(N),
    T1 = now_s(),
    [{value, N / (T1 - T0)}, {unit, 'spawns/s'}, {n, N}];

%% Savina chameneos (redux, with a mall): C creatures, N meetings
run(chameneos, Ns) ->
    C = arg(Ns, 100),
    N = arg2(Ns, 200000),
    Self = self(),
    Colors = {blue, red, yellow},
    T0 = now_s(),
    Mall = spawn_link(fun() -> mall(N, none, 0, 0, C, Self) end),
    [spawn_link(fun() -> chameneo(Mall, element(I rem 3 + 1, Colors), 0) end)
     || I <- lists:seq(1, C)],
    Total = wait(mall_done),
    T1 = now_s(),
    Total =:= 2 * N orelse exit({wrong_meetings, Total, 2 * N}),
    [{value, N / (T1 - T0)}, {unit, 'meetings/s'}, {n, N}];

%% live idle servers (make bench-big): as start, with 1,000,000 by default
run(big, Ns) ->
    Fs = run(start, [arg(Ns, 1000000)]),
    [{value, proplists:get_value(rss, Fs)}, {unit, bytes},
     {rate, proplists:get_value(value, Fs)}, {rate_unit, 'starts/s'},
     {mem, proplists:get_value(mem, Fs)}, {mem_unit, 'bytes/server'},
     {started, proplists:get_value(n, Fs)}, {n, proplists:get_value(n, Fs)},
     {complete, true}];

%% TCP echo (gen_tcp): an acceptor and a process per connection ({active,
%% true}, raw binaries, nodelay), loaded by bench/tcp_load as run.lua's is
run(tcp_echo, Ns) ->
    N = arg(Ns, 10000),
    {Rtt, _} = tcp_bench(1, N),
    [{value, Rtt}, {unit, us}, {n, N}];

run(tcp_rps, Ns) ->
    C = arg(Ns, 100),
    N = arg2(Ns, 2000),
    {_, Rps} = tcp_bench(C, N),
    [{value, Rps}, {unit, 'req/s'}, {n, C * N}];

run(W, _) ->
    exit({unknown_workload, W}).

tcp_bench(Conns, Rounds) ->
    Bin = case os:getenv("BENCH_TCP_LOAD") of
              false -> "build/bench/tcp_load";
              B -> B
          end,
    {ok, LS} = gen_tcp:listen(0, [binary, {packet, raw}, {active, false}, {nodelay, true},
                                  {ip, {127, 0, 0, 1}}, {backlog, 512}, {reuseaddr, true}]),
    {ok, Port} = inet:port(LS),
    Acc = spawn(fun() -> tcp_accept(LS) end),
    ok = gen_tcp:controlling_process(LS, Acc),
    Out = os:cmd(io_lib:format("timeout 200 ~s client ~p ~p ~p 64", [Bin, Port, Conns, Rounds])),
    case re:run(Out, "rtt_us=(\\S+) rps=(\\S+)", [{capture, all_but_first, list}]) of
        {match, [R, P]} -> {list_to_float(R), list_to_float(P)};
        _ -> exit({tcp_load, Out})
    end.

tcp_accept(LS) ->
    case gen_tcp:accept(LS) of
        {ok, S} ->
            Pid = spawn(fun() -> receive {own, Sock} -> inet:setopts(Sock, [{active, true}]),
                                                        tcp_echo(Sock)
                                 after ?T -> ok end end),
            ok = gen_tcp:controlling_process(S, Pid),
            Pid ! {own, S},
            tcp_accept(LS);
        {error, _} -> ok
    end.

tcp_echo(S) ->
    receive
        {tcp, S, Data} -> gen_tcp:send(S, Data), tcp_echo(S);
        {tcp_closed, S} -> ok;
        {tcp_error, S, _} -> ok
    after ?T -> ok
    end.

%% ---------------------------------------------------------------- helpers

cast_loop(_, _, 0) -> ok;
cast_loop(Srv, Msg, N) -> gen_server:cast(Srv, Msg), cast_loop(Srv, Msg, N - 1).

call_loop(_, 0) -> ok;
call_loop(Srv, N) -> pong = gen_server:call(Srv, ping), call_loop(Srv, N - 1).

start_loop(0) -> ok;
start_loop(N) -> {ok, _} = gen_server:start(bench, N, []), start_loop(N - 1).

ping(_, 0) -> ok;
ping(Pong, N) ->
    Pong ! {ping, self()},
    receive pong -> ping(Pong, N - 1) after ?T -> exit(ping_timeout) end.

pong() ->
    receive
        {ping, From} -> From ! pong, pong();
        stop -> ok
    after ?T -> exit(pong_timeout)
    end.

counter(C) ->
    receive
        inc -> counter(C + 1);
        {get, From} -> From ! {count, C}
    after ?T -> exit(counter_timeout)
    end.

count_loop(_, 0) -> ok;
count_loop(Counter, N) -> Counter ! inc, count_loop(Counter, N - 1).

ring_start(Main) ->
    receive {next, Next} -> ring(Next, Main) after ?T -> exit(ring_timeout) end.

ring(Next, Main) ->
    receive
        0 -> Main ! ring_done, ring(Next, Main);
        H when is_integer(H) -> Next ! H - 1, ring(Next, Main);
        stop -> ok
    after ?T -> exit(ring_timeout)
    end.

fork_loop(_, 0) -> ok;
fork_loop(Self, N) -> spawn(fun() -> Self ! done end), fork_loop(Self, N - 1).

join_loop(0) -> ok;
join_loop(N) -> receive done -> join_loop(N - 1) after ?T -> exit(join_timeout) end.

%% the mall pairs creatures until N meetings took place, then tells every
%% creature that asks to stop, sums their meeting counts and reports
mall(N, Waiting, Faded, Sum, C, Main) ->
    receive
        {meet, P, _Color} when N =:= 0 ->
            P ! stop, mall(N, Waiting, Faded, Sum, C, Main);
        {meet, P, Color} when Waiting =:= none ->
            mall(N, {P, Color}, Faded, Sum, C, Main);
        {meet, P, Color} ->
            {P1, _} = Waiting,
            P1 ! {meet, P, Color},
            mall(N - 1, none, Faded, Sum, C, Main);
        {faded, M} when Faded + 1 =:= C ->
            Main ! {mall_done, Sum + M};
        {faded, M} ->
            mall(N, Waiting, Faded + 1, Sum + M, C, Main)
    after ?T -> exit(mall_timeout)
    end.

chameneo(Mall, Color, Met) ->
    Mall ! {meet, self(), Color},
    receive
        {meet, Other, OtherColor} ->
            New = complement(Color, OtherColor),
            Other ! {change, New},
            chameneo(Mall, New, Met + 1);
        {change, New} ->
            chameneo(Mall, New, Met + 1);
        stop ->
            Mall ! {faded, Met}
    after ?T -> exit(chameneo_timeout)
    end.

complement(C, C) -> C;
complement(blue, red) -> yellow;
complement(blue, yellow) -> red;
complement(red, blue) -> yellow;
complement(red, yellow) -> blue;
complement(yellow, blue) -> red;
complement(yellow, red) -> blue.
