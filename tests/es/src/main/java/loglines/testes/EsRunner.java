package loglines.testes;

import java.nio.file.Path;
import java.util.Map;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;

/** Starts one single-node Elasticsearch cluster bound to 127.0.0.1: home, HTTP port, transport port
 *  and the write thread-pool queue size (0 for the default) are the arguments. */
public final class EsRunner {
    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null ? fallback : value;
    }

    public static void main(String[] args) throws Exception {
        Path home = Path.of(args[0]);
        LogConfigurator.configureESLogging();
        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("path.repo", home.resolve("snapshots").toString())
            .put("cluster.name", env("LOGLINES_ES_CLUSTER", "loglines-test"))
            .put("node.name", env("LOGLINES_ES_NODE", "loglines-test-node"))
            .put("http.host", "127.0.0.1")
            .put("http.port", args[1])
            .put("transport.host", "127.0.0.1")
            .put("transport.port", args[2])
            .put("action.auto_create_index", true);
        String seeds = env("LOGLINES_ES_SEEDS", "");
        if (seeds.isEmpty()) {
            builder.put("discovery.type", "single-node");
        } else {  // one node of a cluster: its peers' transport addresses and the first masters
            builder.putList("discovery.seed_hosts", seeds.split(","));
            builder.putList("cluster.initial_master_nodes", env("LOGLINES_ES_MASTERS", "").split(","));
        }
        if (args.length > 3 && !args[3].equals("0")) {
            builder.put("thread_pool.write.queue_size", Integer.parseInt(args[3]));
            builder.put("thread_pool.write.size", 1);
        }
        Settings settings = builder.build();
        LogConfigurator.configureWithoutConfig(settings);
        Environment env = InternalSettingsPreparer.prepareEnvironment(
            settings, Map.of(), home.resolve("config"), () -> "loglines-test-node");
        Node node = new Node(env);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception ignored) {
                // the process is ending anyway
            }
        }));
        node.start();
        System.out.println("loglines-test-node started on 127.0.0.1:" + args[1]);
        Thread.currentThread().join();
    }
}
